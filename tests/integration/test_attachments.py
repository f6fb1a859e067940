"""Attachments of leads and opportunities through the service's own app, on SQLite and PostgreSQL.

Until the attachments Api is wired into the services, it is registered here on the built app
(with the store the wiring will use: ``store_from_environment``, pointed at a temporary
directory); once wired, the service's own registration is used as it is.
"""

from __future__ import annotations

import hashlib
import io
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import delete, func, select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import new_envelope
from crm_kit.cli import migrate
from crm_kit.db import Database, new_metadata
from crm_kit.service import find_service
from crm_kit.settings import ConfigError, load_settings
from crm_kit.web import issue_token
from crm_kit.web.api import request_session
from crm_leads.kind import LEAD
from crm_opportunities.kind import OPPORTUNITY
from crm_pipeline.attachment_routes import attachment_store, build_attachments_api, delete_blobs_with_record
from crm_pipeline.attachments import _Outcome, clean_content_type, sanitize_filename
from crm_pipeline.kind import RecordKind
from crm_pipeline.storage import (
    BlobNotFound,
    LocalDirectoryStore,
    S3Store,
    StorageError,
    UploadTooLarge,
    new_key,
    store_from_environment,
)
from crm_pipeline.tables import pipeline_tables

pytestmark = pytest.mark.integration
SECRET = "attachments-test-secret-long-enough-for-hs256"
KINDS = {"leads": LEAD, "opportunities": OPPORTUNITY}


def auth(roles=("admin",), user="u1", office="o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id=user, name=user.upper(), office_id=office,
                                                     roles=list(roles))}


def seed_default_stage(db: Database, kind: str) -> None:
    """The service's catalogue copy gets a default stage (as its worker would from the catalogue)."""
    attrs = Struct()
    attrs.update({"is_default": True})
    entry = CatalogueEntry(id=str(uuid.uuid4()), kind=kind, entity="stage", code="NEW", names={"en": "New"},
                           index=1, active=True, version=1, attributes=attrs)
    with db.transaction() as s:
        apply_catalogue_event(s, new_envelope("catalogue.stage.updated", "stage", entry.id, 1, entry))


def blobs(root: Path) -> list[Path]:
    """Every file in the store, temporary ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class Service:
    def __init__(self, app: Any, db: Database, kind: RecordKind, store_dir: Path) -> None:
        self.app = app
        self.client = app.test_client()
        self.db = db
        self.kind = kind
        self.store_dir = store_dir
        self.tables = pipeline_tables(new_metadata(), kind.plural)
        self.base = kind.collection_path

    def new_record(self, headers: dict[str, str] | None = None, **data: Any) -> str:
        r = self.client.post(self.base, json={"title": "Acme", **data}, headers=headers or auth())
        assert r.status_code == 201, r.json
        return str(r.json["id"])

    def upload(self, record_id: str, content: bytes = b"hello", filename: str = "hello.txt",
               content_type: str | None = "text/plain", headers: dict[str, str] | None = None,
               **form: Any) -> Any:
        data: dict[str, Any] = {"type": "contract", **form}
        data["file"] = (io.BytesIO(content), filename, content_type) if content_type else \
            (io.BytesIO(content), filename)
        data = {k: v for k, v in data.items() if v is not None}
        return self.client.post(f"{self.base}/{record_id}/attachments", data=data,
                                content_type="multipart/form-data", headers=headers or auth())

    def count(self, record_id: str) -> int:
        table = self.tables["attachments"]
        with self.db.transaction() as s:
            return int(s.execute(select(func.count()).select_from(table)
                                 .where(table.c.record_id == record_id)).scalar_one())


@pytest.fixture
def service(any_db_url, tmp_path, monkeypatch):
    def make(name: str, **env: str) -> Service:
        kind = KINDS[name]
        store_dir = tmp_path / "attachments"
        monkeypatch.setenv("CRM_ATTACHMENTS_STORE", "local")
        monkeypatch.setenv("CRM_ATTACHMENTS_DIR", str(store_dir))
        spec = find_service(name)
        settings = load_settings("domain", {"CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": any_db_url,
                                            "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET, **env})
        migrate(spec, settings)
        app = spec.build_app(settings)
        if attachment_store(kind, app) is None:  # not wired into the service (yet)
            api = build_attachments_api(kind, pipeline_tables(new_metadata(), kind.plural),
                                        lambda: store_from_environment(name))
            api.register(app)
        store = attachment_store(kind, app)
        assert isinstance(store, LocalDirectoryStore) and store.root == store_dir.resolve()
        db = Database(any_db_url)
        seed_default_stage(db, kind.kind)
        return Service(app, db, kind, store_dir)
    return make


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_upload_list_download_delete(service, name):
    svc = service(name)
    c = svc.client
    rid = svc.new_record()
    url = f"{svc.base}/{rid}/attachments"

    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 800  # ~200 KiB, binary: streamed in several chunks
    r = svc.upload(rid, pdf, "report.pdf", "application/pdf", type="contract")
    assert r.status_code == 201, r.json
    first = r.json
    assert set(first) == {"id", "record_id", "filename", "content_type", "type", "size", "sha256", "created_at",
                          "created_by"}
    assert first["record_id"] == rid and first["filename"] == "report.pdf"
    assert first["content_type"] == "application/pdf" and first["type"] == "contract"
    assert first["size"] == len(pdf) and first["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert first["created_by"] == "u1" and first["created_at"].endswith("Z")
    assert r.headers["Location"] == f"{url}/{first['id']}"
    assert len(blobs(svc.store_dir)) == 1

    r = svc.upload(rid, "Grüße\n".encode(), "notes.txt", "text/plain; charset=UTF-8", type="  note  ")
    assert r.status_code == 201, r.json
    second = r.json
    assert second["content_type"] == "text/plain; charset=utf-8" and second["type"] == "note"
    # No content type on the part: application/octet-stream.
    r = svc.upload(rid, b"\x00\x01", "blob", None, type="raw")
    assert r.status_code == 201 and r.json["content_type"] == "application/octet-stream"
    third = r.json

    # List: newest first, paginated, visible with the view permission.
    items = c.get(url, headers=auth(roles=("viewer",))).json["items"]
    assert [i["id"] for i in items] == [third["id"], second["id"], first["id"]]
    assert items[2] == first
    page = c.get(url, query_string={"page_size": 2}, headers=auth()).json
    assert len(page["items"]) == 2 and page["next_page_token"]
    rest = c.get(url, query_string={"page_size": 2, "page_token": page["next_page_token"]}, headers=auth()).json
    assert [i["id"] for i in rest["items"]] == [first["id"]] and rest["next_page_token"] is None
    assert c.get(url, query_string={"bogus": 1}, headers=auth()).status_code == 422

    # Download: the same bytes, with the metadata's headers, as a download.
    r = c.get(f"{url}/{first['id']}", headers=auth(roles=("viewer",)))
    assert r.status_code == 200 and r.data == pdf
    assert r.headers["Content-Type"] == "application/pdf"
    assert r.headers["Content-Length"] == str(len(pdf))
    assert r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''report.pdf"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = c.get(f"{url}/{second['id']}", headers=auth())
    assert r.data == "Grüße\n".encode() and r.headers["Content-Type"] == "text/plain; charset=utf-8"
    # HTML is never rendered inline.
    r = svc.upload(rid, b"<script>alert(1)</script>", "x.html", "text/html", type="page")
    html = r.json
    r = c.get(f"{url}/{html['id']}", headers=auth())
    assert r.headers["Content-Disposition"].startswith("attachment;")
    assert r.headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in r.headers["Content-Security-Policy"]
    assert c.get(f"{url}/nope", headers=auth()).status_code == 404

    # Permissions: view is not edit.
    assert svc.upload(rid, headers=auth(roles=("viewer",))).status_code == 403
    assert c.delete(f"{url}/{first['id']}", headers=auth(roles=("viewer",))).status_code == 403

    # Another office sees nothing, not even with the edit permission.
    for roles in (("viewer",), ("marketing", "account_manager")):
        other = auth(roles=roles, user="u2", office="o2")
        assert c.get(url, headers=other).status_code == 404
        assert c.get(f"{url}/{first['id']}", headers=other).status_code == 404
        assert c.delete(f"{url}/{first['id']}", headers=other).status_code == (403 if roles == ("viewer",) else 404)
    r = svc.upload(rid, headers=auth(roles=("marketing", "account_manager"), user="u2", office="o2"))
    assert r.status_code == 404
    # An attachment is only reachable through its own record.
    other_rid = svc.new_record()
    assert c.get(f"{svc.base}/{other_rid}/attachments/{first['id']}", headers=auth()).status_code == 404
    assert c.delete(f"{svc.base}/{other_rid}/attachments/{first['id']}", headers=auth()).status_code == 404

    # Delete: the row and then the blob.
    assert len(blobs(svc.store_dir)) == 4
    assert c.delete(f"{url}/{first['id']}", headers=auth()).status_code == 204
    assert c.get(f"{url}/{first['id']}", headers=auth()).status_code == 404
    assert c.delete(f"{url}/{first['id']}", headers=auth()).status_code == 404
    assert first["id"] not in [i["id"] for i in c.get(url, headers=auth()).json["items"]]
    assert len(blobs(svc.store_dir)) == 3

    # Deleting the record removes its attachments' rows (foreign key cascade).
    assert svc.count(rid) == 3
    assert c.delete(f"{svc.base}/{rid}", headers=auth()).status_code == 204
    assert svc.count(rid) == 0
    assert c.get(url, headers=auth()).status_code == 404


def test_upload_refusals(service):
    limit = 1000
    svc = service("leads", CRM_MAX_UPLOAD_BYTES=str(limit))
    c = svc.client
    rid = svc.new_record()
    url = f"{svc.base}/{rid}/attachments"

    # The limit: one byte more is 413, the limit itself is fine; nothing is kept of a refused file.
    r = svc.upload(rid, b"x" * (limit + 1))
    assert r.status_code == 413 and r.headers["Content-Type"] == "application/problem+json"
    assert str(limit) in r.json["detail"]
    r = svc.upload(rid, b"x" * (200 * 1024))  # the body itself is over the limit: refused before reading
    assert r.status_code == 413
    assert blobs(svc.store_dir) == []
    assert svc.upload(rid, b"x" * limit).status_code == 201
    assert len(blobs(svc.store_dir)) == 1

    # Not multipart: 415.
    r = c.post(url, json={"type": "contract", "file": "aGVsbG8="}, headers=auth())
    assert r.status_code == 415
    r = c.post(url, data=b"hello", content_type="application/octet-stream", headers=auth())
    assert r.status_code == 415

    # Invalid fields: 422, naming the field.
    def refused(field: str, **kw: Any) -> None:
        r = svc.upload(rid, **kw)
        assert r.status_code == 422, (kw, r.status_code, r.json)
        assert r.json["errors"][0]["field"] == field, r.json

    refused("type", type=None)
    refused("type", type="")
    refused("type", type="   ")
    refused("type", type="t" * 101)
    refused("type", type="a\x07b")
    refused("file", content=b"")
    refused("extra", extra="x")
    r = c.post(url, data={"type": "contract"}, content_type="multipart/form-data", headers=auth())
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "file"
    r = c.post(url, data={"type": "contract", "file": "not a file part"}, content_type="multipart/form-data",
               headers=auth())
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "file"
    r = c.post(url, data={"type": "contract", "file": [(io.BytesIO(b"a"), "a.txt"), (io.BytesIO(b"b"), "b.txt")]},
               content_type="multipart/form-data", headers=auth())
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "file"
    assert svc.upload(rid, type="t" * 100).status_code == 201

    # A record that does not exist: 404, and no blob is left behind.
    before = blobs(svc.store_dir)
    assert svc.upload("no-such-record").status_code == 404
    assert blobs(svc.store_dir) == before
    # No token: 401.
    r = c.post(url, data={"type": "x", "file": (io.BytesIO(b"a"), "a.txt")}, content_type="multipart/form-data")
    assert r.status_code == 401
    assert blobs(svc.store_dir) == before and svc.count(rid) == 2


def test_hostile_filenames_are_stored_safely(service):
    svc = service("leads")
    rid = svc.new_record()
    url = f"{svc.base}/{rid}/attachments"

    r = svc.upload(rid, b"root:x:0:0", "../../etc/passwd")
    assert r.status_code == 201 and r.json["filename"] == "passwd"
    passwd = r.json
    # Names as RFC 8187 lets a client send them: a CR LF and a NUL, a Windows path with a bidi override.
    def raw_upload(encoded_name: bytes, content: bytes) -> Any:
        body = (b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename*=UTF-8\'\'' + encoded_name
                + b'\r\nContent-Type: text/plain\r\n\r\n' + content + b'\r\n'
                b'--BOUNDARY\r\nContent-Disposition: form-data; name="type"\r\n\r\nnote\r\n--BOUNDARY--\r\n')
        return svc.client.post(url, data=body, content_type="multipart/form-data; boundary=BOUNDARY", headers=auth())

    r = raw_upload(b"a%0D%0Ab%00.txt", b"split")
    assert r.status_code == 201, r.json
    assert r.json["filename"] == "ab.txt"
    crlf = r.json
    r = raw_upload(b"..%5C..%5Cwindows%5Cevil%E2%80%AEtxt.exe", b"x")
    assert r.status_code == 201 and r.json["filename"] == "eviltxt.exe"
    r = svc.upload(rid, b"x", "..")
    assert r.status_code == 201 and r.json["filename"] == "attachment"
    r = svc.upload(rid, b"x", "n" * 300 + ".docx")
    assert r.status_code == 201 and len(r.json["filename"]) == 255 and r.json["filename"].endswith(".docx")

    # Every blob is inside the store under a generated key; no client name reached the disk.
    root = svc.store_dir.resolve()
    files = blobs(svc.store_dir)
    assert len(files) == 5
    for f in files:
        assert f.resolve().is_relative_to(root) and len(f.name) == 32 and all(ch in "0123456789abcdef"
                                                                               for ch in f.name)
    assert not (root.parent / "etc").exists()
    # The header of the download cannot be split, and quotes the name.
    r = svc.client.get(f"{url}/{crlf['id']}", headers=auth())
    assert r.data == b"split" and r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''ab.txt"
    r = svc.client.get(f"{url}/{passwd['id']}", headers=auth())
    assert r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''passwd"


class _DeletesTheRecordAfterPut:
    """A store wrapper that, once the blob is stored, deletes the record in the request's own
    transaction: the attachment row's insert then fails on the foreign key."""

    def __init__(self, inner: Any, records: Any, record_id: str) -> None:
        self.inner, self.records, self.record_id = inner, records, record_id

    def put(self, key: str, stream: Any, max_bytes: int) -> tuple[int, str]:
        result = self.inner.put(key, stream, max_bytes)
        request_session().execute(delete(self.records).where(self.records.c.id == self.record_id))
        return result

    def open(self, key: str) -> Any:
        return self.inner.open(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


class _FailingDelete(LocalDirectoryStore):
    def delete(self, key: str) -> None:
        raise StorageError("the disk is gone")


def test_blob_and_row_stay_in_step(service, monkeypatch, caplog):
    svc = service("leads")
    rid = svc.new_record()
    url = f"{svc.base}/{rid}/attachments"
    stores = svc.app.extensions["crm_attachments"]
    store = stores["leads"]

    # The row cannot be written after the blob was stored: the blob goes, the record stays.
    monkeypatch.setitem(stores, "leads", _DeletesTheRecordAfterPut(store, svc.tables["records"], rid))
    r = svc.upload(rid)
    assert r.status_code == 409, r.json
    assert blobs(svc.store_dir) == []
    assert svc.client.get(f"{svc.base}/{rid}", headers=auth()).status_code == 200
    # The same with an Idempotency-Key (the kit's other commit path).
    r = svc.upload(rid, headers={**auth(), "Idempotency-Key": "k1"})
    assert r.status_code == 409 and blobs(svc.store_dir) == []

    # An upload with an Idempotency-Key is replayed without storing a second blob. (The kit
    # fingerprints the raw body, so a retry must resend the same bytes, boundary included.)
    monkeypatch.setitem(stores, "leads", store)
    body = (b'--B0\r\nContent-Disposition: form-data; name="file"; filename="once.txt"\r\n\r\nonce\r\n'
            b'--B0\r\nContent-Disposition: form-data; name="type"\r\n\r\nnote\r\n--B0--\r\n')

    def send() -> Any:
        return svc.client.post(url, data=body, content_type="multipart/form-data; boundary=B0",
                               headers={**auth(), "Idempotency-Key": "k2"})
    r1, r2 = send(), send()
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert r1.status_code == r2.status_code == 201 and r1.json["id"] == r2.json["id"]
    assert len(blobs(svc.store_dir)) == 1 and svc.count(rid) == 1

    # The blob cannot be deleted after the row is gone: logged with its key, the delete succeeds.
    failing = _FailingDelete(svc.store_dir)
    monkeypatch.setitem(stores, "leads", failing)
    key = blobs(svc.store_dir)[0].name
    with caplog.at_level("ERROR", logger="crm_pipeline.attachments"):
        assert svc.client.delete(f"{url}/{r1.json['id']}", headers=auth()).status_code == 204
    assert svc.count(rid) == 0 and len(blobs(svc.store_dir)) == 1
    assert any("attachment blob not deleted" in rec.getMessage() and key in rec.getMessage()
               for rec in caplog.records)
    # A row whose blob is missing: 404, logged.
    monkeypatch.setitem(stores, "leads", store)
    blobs(svc.store_dir)[0].unlink()
    r = svc.upload(rid, b"soon gone")
    blobs(svc.store_dir)[0].unlink()
    assert svc.client.get(f"{url}/{r.json['id']}", headers=auth()).status_code == 404


def test_record_deletion_can_take_the_blobs(service):
    """``delete_blobs_with_record``: blobs go once the record's deletion commits, not before."""
    svc = service("opportunities")
    kind, tables = svc.kind, svc.tables
    keep, gone = svc.new_record(), svc.new_record()
    for rid in (keep, gone):
        assert svc.upload(rid).status_code == 201
    assert len(blobs(svc.store_dir)) == 2
    records = tables["records"]
    with svc.app.app_context():
        with svc.db.transaction() as s:  # deleted in a savepoint that is rolled back: all stays
            savepoint = s.begin_nested()
            delete_blobs_with_record(s, kind, tables, keep)
            s.execute(delete(records).where(records.c.id == keep))
            savepoint.rollback()
        with svc.db.transaction() as s:  # deleted in a released savepoint, then committed
            savepoint = s.begin_nested()
            delete_blobs_with_record(s, kind, tables, gone)
            s.execute(delete(records).where(records.c.id == gone))
            savepoint.commit()
            assert len(blobs(svc.store_dir)) == 2  # not before the commit
    assert len(blobs(svc.store_dir)) == 1
    assert svc.count(keep) == 1 and svc.count(gone) == 0
    r = svc.client.get(f"{svc.base}/{keep}/attachments", headers=auth())
    item = r.json["items"][0]
    assert svc.client.get(f"{svc.base}/{keep}/attachments/{item['id']}", headers=auth()).data == b"hello"


def test_outcome_callbacks(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'o.sqlite3'}")
    seen: list[str] = []

    def note(what: str) -> Any:
        return lambda: seen.append(what)

    for end in ("commit", "rollback", "close", "commit fails"):
        session = db.sessions()
        session.begin()
        session.execute(select(1))
        _Outcome.when_done(session, committed=note(f"{end}: committed"), rolled_back=note(f"{end}: rolled back"))
        if end == "commit":
            session.commit()
        elif end == "rollback":
            session.rollback()
        elif end == "commit fails":
            from sqlalchemy import event

            def boom(_s: Any) -> None:
                raise RuntimeError("commit failed")
            event.listen(session, "before_commit", boom)
            with pytest.raises(RuntimeError):
                session.commit()
        session.close()
    assert seen == ["commit: committed", "rollback: rolled back", "close: rolled back", "commit fails: rolled back"]


def test_local_directory_store(tmp_path):
    store = LocalDirectoryStore(tmp_path / "s")
    data = bytes(range(256)) * 1000
    key = new_key()
    assert store.put(key, io.BytesIO(data), len(data)) == (len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(store.open(key)) == data
    chunks = store.open(key)
    next(chunks)
    chunks.close()  # type: ignore[attr-defined]
    with pytest.raises(UploadTooLarge):
        store.put(new_key(), io.BytesIO(data), len(data) - 1)
    assert blobs(tmp_path / "s") == [store.path(key)]  # no temporary file left
    with pytest.raises(StorageError):
        store.put(key, io.BytesIO(b"again"), 10)
    for bad in ("../../etc/passwd", "..", "a/b", "/etc/passwd", "", "AB", "x" * 129, "ab\x00cd"):
        with pytest.raises(ValueError):
            store.path(bad)
        with pytest.raises(ValueError):
            store.put(bad, io.BytesIO(b"x"), 10)
    store.delete(key)
    store.delete(key)  # missing is fine
    with pytest.raises(BlobNotFound):
        store.open(key)

    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise ConnectionError("client went away")
    with pytest.raises(ConnectionError):
        store.put(new_key(), Broken(), 100)
    assert blobs(tmp_path / "s") == []


def test_store_from_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = store_from_environment("leads", {})
    assert isinstance(store, LocalDirectoryStore) and store.root == tmp_path / ".run" / "attachments" / "leads"
    store = store_from_environment("leads", {"CRM_ATTACHMENTS_STORE": "local", "CRM_ATTACHMENTS_DIR": "files"})
    assert isinstance(store, LocalDirectoryStore) and store.root == tmp_path / "files"
    with pytest.raises(ConfigError, match="CRM_ATTACHMENTS_STORE"):
        store_from_environment("leads", {"CRM_ATTACHMENTS_STORE": "ftp"})
    with pytest.raises(ConfigError, match="CRM_ATTACHMENTS_S3_BUCKET"):
        store_from_environment("leads", {"CRM_ATTACHMENTS_STORE": "s3"})
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    with pytest.raises(ConfigError, match="boto3"):
        store_from_environment("leads", {"CRM_ATTACHMENTS_STORE": "s3", "CRM_ATTACHMENTS_S3_BUCKET": "b"})


class _FakeS3:
    """The three calls S3Store makes, in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def upload_fileobj(self, fileobj: Any, bucket: str, key: str) -> None:
        parts = []
        while chunk := fileobj.read(8 * 1024):
            parts.append(chunk)
        self.objects[(bucket, key)] = b"".join(parts)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if (Bucket, Key) not in self.objects:
            error = Exception("not found")
            error.response = {"Error": {"Code": "NoSuchKey"}}  # type: ignore[attr-defined]
            raise error
        body = io.BytesIO(self.objects[(Bucket, Key)])
        body.iter_chunks = lambda size: iter(lambda: body.read(size), b"")  # type: ignore[attr-defined]
        return {"Body": body}

    def delete_object(self, Bucket: str, Key: str) -> None:
        self.objects.pop((Bucket, Key), None)


def test_s3_store_with_a_fake_client():
    fake = _FakeS3()
    store = S3Store("bucket", prefix="leads/", client=fake)
    key = new_key()
    assert store.put(key, io.BytesIO(b"abc" * 10000), 30000)[0] == 30000
    assert ("bucket", f"leads/{key}") in fake.objects
    assert b"".join(store.open(key)) == b"abc" * 10000
    with pytest.raises(UploadTooLarge):
        store.put(new_key(), io.BytesIO(b"abc" * 10000), 29999)
    assert len(fake.objects) == 1
    store.delete(key)
    with pytest.raises(BlobNotFound):
        store.open(key)
    with pytest.raises(ValueError):
        store.put("../x", io.BytesIO(b"x"), 10)


def test_input_cleaning():
    assert sanitize_filename(None) == "attachment"
    assert sanitize_filename("C:\\Users\\me\\Desktop\\cv.pdf") == "cv.pdf"
    assert sanitize_filename("  report\t.pdf  ") == "report.pdf"
    assert sanitize_filename("e\u0301te\u0301.txt") == "\u00e9t\u00e9.txt"  # NFC
    assert sanitize_filename("family-\U0001f468\u200d\U0001f469.png") == "family-\U0001f468\u200d\U0001f469.png"
    assert clean_content_type("Text/HTML", {"charset": "UTF-8"}) == "text/html; charset=utf-8"
    assert clean_content_type("text/plain\r\nX-Injected: 1") == "application/octet-stream"
    assert clean_content_type("nonsense") == "application/octet-stream"
    assert clean_content_type("text/plain", {"charset": "utf-8\r\nX: y"}) == "text/plain"

"""Attachments of pipeline records: ``/v1/{records}/{id}/attachments[/{aid}]``.

Metadata rows live in the service's ``attachments`` table (cascade-deleted with their
record); the bytes live in an ``AttachmentStore`` (``crm_pipeline.storage``).

The database and the store cannot share a transaction, so the two are kept in step by the
request's transaction outcome:

- upload: the blob is written first (streamed in chunks from werkzeug's spooled upload),
  then the row; if the transaction does not commit - a refused request, a failed insert, a
  failed commit, an idempotency race - the blob is deleted (``_Outcome``). No orphans.
- delete: the row goes first; the blob is deleted only once that commits. If deleting the
  blob fails then, it is logged (``attachment blob not deleted``) with its key for a later
  cleanup; a row never points at a missing blob because of a rollback.

Limits: the file may have ``CRM_MAX_UPLOAD_BYTES`` bytes (413 beyond); the multipart body
around it may add ``MULTIPART_OVERHEAD`` bytes. Downloads are always ``attachment``
(never rendered inline), with ``nosniff`` and a sandboxing CSP.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, current_app, has_app_context, request
from marshmallow import Schema, fields, validate
from sqlalchemy import Table, delete, event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from crm_kit.db import utcnow
from crm_kit.settings import (
    MULTIPART_OVERHEAD,  # boundaries, part headers and `type` around the file
    ConfigError,
)
from crm_kit.web import Api, ListResult, Problem, Reply, RequestContext, SortKey, limits
from crm_kit.web.app import route_of_request
from crm_kit.web.fields import Timestamp
from crm_kit.web.pagination import PageQuery
from crm_pipeline.kind import RecordKind
from crm_pipeline.queries import load_visible
from crm_pipeline.storage import AttachmentStore, BlobNotFound, StorageError, UploadTooLarge, new_key

log = logging.getLogger(__name__)

StoreFactory = Callable[[], AttachmentStore]

MAX_BODY_CEILING = 1024 * 1024 * 1024  # what the edge lets through before the app's own limit applies
MAX_FILENAME = 255
MAX_TYPE = 100
_MAX_PARTS = 16
_FALLBACK_FILENAME = "attachment"
_OCTET_STREAM = "application/octet-stream"
_NAME_CHARS = r"[A-Za-z0-9!#$&^_.+-]{1,100}"  # RFC 6838 restricted-name
_MEDIA_TYPE = re.compile(rf"{_NAME_CHARS}/{_NAME_CHARS}")
_CHARSET = re.compile(r"[A-Za-z0-9!#$%&'+^_`{}~.-]{1,40}")
_STORES = "crm_attachments"  # app.extensions key: {kind.plural: AttachmentStore}
# Format characters that must not survive in a name a user will see (bidi overrides can make
# "evil\u202etxt.exe" look like "evilexe.txt"); zero-width (non-)joiners are kept for emoji
# and scripts that need them.
_KEEP_FORMAT = {"\u200c", "\u200d"}


class AttachmentOut(Schema):
    # The columns' lengths (the validators only document them: this is a response).
    id = fields.String(required=True, validate=limits.ID)
    record_id = fields.String(required=True, validate=limits.ID)
    filename = fields.String(required=True, validate=validate.Length(max=255))
    content_type = fields.String(required=True, validate=validate.Length(max=200))
    type = fields.String(required=True, validate=validate.Length(max=100))
    size = fields.Integer(required=True, validate=limits.SIZE)
    sha256 = fields.String(required=True, validate=validate.Length(min=64, max=64))
    created_at = Timestamp(required=True)
    created_by = fields.String(required=True, validate=limits.REF)


_PUBLIC = tuple(AttachmentOut().fields)


class AttachmentListQuery(PageQuery):
    """``page_size`` and ``page_token``."""


# -- input cleaning ------------------------------------------------------------------------------


def sanitize_filename(raw: str | None) -> str:
    """A safe display name from a client's filename: its last path segment, without control
    and invisible format characters, at most 255 characters (the extension is kept)."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if _visible(ch)).strip()
    if not name.strip("."):
        return _FALLBACK_FILENAME
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and 0 < len(extension) <= 16:
            name = stem[: MAX_FILENAME - len(extension) - 1].rstrip() + "." + extension
        else:
            name = name[:MAX_FILENAME].rstrip()
    return name


def _visible(ch: str) -> bool:
    category = unicodedata.category(ch)
    if category in ("Cc", "Cs", "Co", "Zl", "Zp"):
        return False
    return category != "Cf" or ch in _KEEP_FORMAT


def clean_content_type(mimetype: str | None, params: Mapping[str, str] | None = None) -> str:
    """The part's media type (lower case, with its charset if it had a valid one), or
    ``application/octet-stream`` when it is missing or not a well-formed media type."""
    mimetype = (mimetype or "").strip().lower()
    if not _MEDIA_TYPE.fullmatch(mimetype):
        return _OCTET_STREAM
    charset = (params or {}).get("charset", "")
    if charset and _CHARSET.fullmatch(charset):
        return f"{mimetype}; charset={charset.lower()}"
    return mimetype


def content_disposition(filename: str) -> str:
    """``attachment; filename*=UTF-8''<percent-encoded name>`` (RFC 6266 / RFC 8187)."""
    return "attachment; filename*=UTF-8''" + quote(filename, safe="")


def _field_error(field: str, message: str, detail: str | None = None) -> Problem:
    return Problem(422, detail or f"{field}: {message}", errors=[{"field": field, "message": message}])


def _read_form() -> tuple[Any, str]:
    """The ``file`` part and the ``type`` field of the multipart body, or a 422."""
    files, form = request.files, request.form  # parses the body (RequestEntityTooLarge -> 413)
    for name in list(files) + list(form):
        if name not in ("file", "type"):
            raise _field_error(name, "Unknown field.", f"Unknown field {name!r}: send only `file` and `type`.")
    uploads = files.getlist("file")
    if not uploads:
        if "file" in form:
            raise _field_error("file", "Must be a file part (with a filename).")
        raise _field_error("file", "Missing data for required field.", "A file part named `file` is required.")
    if len(uploads) > 1:
        raise _field_error("file", "Send one file per request.")
    if "type" in files:
        raise _field_error("type", "Must be a text field, not a file.")
    types = form.getlist("type")
    if not types:
        raise _field_error("type", "Missing data for required field.", "The text field `type` is required.")
    if len(types) > 1:
        raise _field_error("type", "Send `type` once.")
    kind = types[0].strip()
    if not 1 <= len(kind) <= MAX_TYPE:
        raise _field_error("type", f"Length must be between 1 and {MAX_TYPE}.")
    if any(not _visible(ch) for ch in kind):
        raise _field_error("type", "Must not contain control characters.")
    return uploads[0], kind


# -- keeping the store in step with the transaction --------------------------------------------


class _Outcome:
    """Runs callbacks when the transaction that was current at ``when_done`` ends.

    A savepoint that is released hands its callbacks to its parent; one that is rolled back
    runs its ``rolled_back`` callbacks at once (its writes are gone even if the request
    commits). The root transaction runs ``committed`` after a commit and ``rolled_back``
    after anything else (rollback, failed commit, close).
    """

    KEY = "crm_pipeline.attachments.outcome"

    def __init__(self, session: Session) -> None:
        self.pending: dict[SessionTransaction, list[tuple[Callable[[], None] | None, Callable[[], None] | None]]] = {}
        self.committed: set[SessionTransaction] = set()
        event.listen(session, "after_commit", self._after_commit)
        event.listen(session, "after_transaction_end", self._after_end)

    @classmethod
    def when_done(cls, session: Session, *, committed: Callable[[], None] | None = None,
                  rolled_back: Callable[[], None] | None = None) -> None:
        outcome = session.info.get(cls.KEY)
        if outcome is None:
            outcome = session.info[cls.KEY] = cls(session)
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is None:  # callers have just used the session, so this is a bug
            raise RuntimeError("when_done needs a session in a transaction")
        outcome.pending.setdefault(transaction, []).append((committed, rolled_back))

    def _after_commit(self, session: Session) -> None:
        current = session.get_nested_transaction() if session.in_nested_transaction() else session.get_transaction()
        if current is not None:
            self.committed.add(current)

    def _after_end(self, session: Session, transaction: SessionTransaction) -> None:
        callbacks = self.pending.pop(transaction, [])
        committed = transaction in self.committed
        self.committed.discard(transaction)
        if transaction.parent is not None and committed:  # a released savepoint: the parent decides
            if callbacks:
                self.pending.setdefault(transaction.parent, []).extend(callbacks)
            return
        for on_commit, on_rollback in callbacks:
            _run(on_commit if committed else on_rollback)


def _run(callback: Callable[[], None] | None) -> None:
    if callback is None:
        return
    try:
        callback()
    except Exception:  # a cleanup must never break the request's commit or rollback
        log.exception("attachment cleanup failed")


def _discard_blob(store: AttachmentStore, key: str, why: str) -> Callable[[], None]:
    def discard() -> None:
        try:
            store.delete(key)
        except Exception:
            # The row is gone (or was never kept): a later cleanup can find the blob by listing
            # the store and comparing with the attachments tables' storage_key.
            log.exception("attachment blob not deleted (%s): store=%r storage_key=%s", why, store, key)
    return discard


# -- the store of an app ---------------------------------------------------------------------------


def attachment_store(kind: RecordKind, app: Flask | None = None) -> AttachmentStore | None:
    """The store the attachments API of ``kind`` uses in ``app`` (default: the current app)."""
    if app is None:
        if not has_app_context():
            return None
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    stores: dict[str, AttachmentStore] = app.extensions.get(_STORES, {})
    return stores.get(kind.plural)


def delete_blobs_with_record(session: Session, kind: RecordKind, tables: Mapping[str, Table],
                             record_id: str) -> None:
    """Call in the transaction that deletes a record: the rows of its attachments go with it
    (foreign key cascade) and, once that transaction commits, so do their blobs.

    Does nothing outside an app that serves the attachments of ``kind`` (e.g. in a worker).
    """
    store = attachment_store(kind)
    if store is None:
        return
    table = tables["attachments"]
    for key in session.execute(select(table.c.storage_key).where(table.c.record_id == record_id)).scalars():
        _Outcome.when_done(session, committed=_discard_blob(store, key, "record deleted"))


# -- the API ---------------------------------------------------------------------------------------


class AttachmentsApi(Api):
    """The attachment routes; registering them on an app makes the app's store (so a
    misconfigured store fails when the app is built) and applies the upload size limit."""

    def __init__(self, kind: RecordKind, store_factory: StoreFactory) -> None:
        super().__init__(kind.plural)
        self.kind = kind
        self.store_factory = store_factory
        self.upload_handler: Callable[..., Any] | None = None

    def register(self, app: Flask) -> None:
        settings = app.extensions["crm"].settings
        limit = int(settings["CRM_MAX_UPLOAD_BYTES"])
        if not 0 < limit <= MAX_BODY_CEILING - MULTIPART_OVERHEAD:
            raise ConfigError(f"CRM_MAX_UPLOAD_BYTES={limit} is invalid: it must be between 1 and "
                              f"{MAX_BODY_CEILING - MULTIPART_OVERHEAD}.")
        store = self.store_factory()
        app.extensions.setdefault(_STORES, {})[self.kind.plural] = store
        log.info("attachments of %s are stored in %r", self.kind.plural, store)
        super().register(app)
        # Runs after the kit's edge rules (registered when the app was created).
        app.before_request(self._limit_upload)

    def _limit_upload(self) -> None:
        route = route_of_request()
        if route is None or route.handler is not self.upload_handler or request.method != "POST":
            return
        limit = int(current_app.extensions["crm"].settings["CRM_MAX_UPLOAD_BYTES"])
        request.max_content_length = limit + MULTIPART_OVERHEAD  # also bounds bodies without Content-Length
        # Text parts stay under Flask's MAX_FORM_MEMORY_SIZE (500 kB): werkzeug applies that limit
        # to its 64 KiB read buffer too, so it cannot be much smaller.
        request.max_form_parts = _MAX_PARTS
        if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
            raise _too_large(limit)


def _too_large(limit: int) -> Problem:
    return Problem(413, f"Attachments may have at most {limit} bytes.")


def build_attachments_api(kind: RecordKind, tables: Mapping[str, Table], store_factory: StoreFactory) -> Api:
    """Upload, list, download and delete the attachments of ``kind``'s records.

    ``store_factory`` makes the ``AttachmentStore`` when the API is registered on an app
    (e.g. ``lambda: store_from_environment(kind.plural)``).
    """
    api = AttachmentsApi(kind, store_factory)
    records, table = tables["records"], tables["attachments"]
    collection = f"{kind.collection_path}/<record_id>/attachments"

    def store() -> AttachmentStore:
        found = attachment_store(kind)
        if found is None:  # registered through AttachmentsApi.register, so always there
            raise RuntimeError(f"no attachment store registered for {kind.plural}")
        return found

    def load_record(ctx: RequestContext, record_id: str) -> Any:
        return load_visible(ctx.session, records, kind, ctx.user, record_id)

    def load_attachment(ctx: RequestContext, record_id: str, attachment_id: str) -> Any:
        load_record(ctx, record_id)
        row = ctx.session.execute(select(table).where(table.c.id == attachment_id,
                                                      table.c.record_id == record_id)).first()
        if row is None:
            raise Problem(404, f"No attachment with id {attachment_id!r} on this {kind.kind}.")
        return row

    def location(record_id: str, attachment_id: str) -> str:
        return f"{kind.collection_path}/{record_id}/attachments/{attachment_id}"

    @api.post(collection, permission=kind.permission("edit"), accepts="multipart/form-data",
              max_body=MAX_BODY_CEILING, response=AttachmentOut, status=201, errors=(413, 415, 422, 503),
              summary=f"Attach a file to a {kind.kind}")
    def upload_attachment(ctx: RequestContext, record_id: str) -> Reply:
        """Attach a file to a record.

        `multipart/form-data` with a file part `file` and a text field `type` (1-100
        characters). The filename is reduced to a safe display name; the part's
        Content-Type is kept (`application/octet-stream` when it has none). At most
        `CRM_MAX_UPLOAD_BYTES` bytes (413); an empty file is 422.
        """
        load_record(ctx, record_id)
        upload, attachment_type = _read_form()
        target = store()
        key = new_key()
        limit = int(ctx.settings["CRM_MAX_UPLOAD_BYTES"])
        try:
            size, sha256 = target.put(key, upload.stream, limit)
        except UploadTooLarge:
            raise _too_large(limit) from None
        except StorageError:
            log.exception("attachment upload could not be stored: store=%r", target)
            raise Problem(503, "The attachment store is unavailable; retry shortly.",
                          headers={"Retry-After": "5"}) from None
        # From here on, the blob goes again unless this request's transaction commits.
        _Outcome.when_done(ctx.session, rolled_back=_discard_blob(target, key, "upload not saved"))
        if size == 0:
            raise _field_error("file", "The file is empty.")
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()), "record_id": record_id,
            "filename": sanitize_filename(upload.filename),
            "content_type": clean_content_type(upload.mimetype, upload.mimetype_params),
            "type": attachment_type, "size": size, "sha256": sha256, "storage_key": key,
            "created_at": utcnow(), "created_by": ctx.user.user_id,
        }
        ctx.session.execute(insert(table).values(**row))
        return Reply({k: row[k] for k in _PUBLIC}, headers={"Location": location(record_id, row["id"])})

    api.upload_handler = upload_attachment

    @api.get(collection, permission=kind.permission("view"), query=AttachmentListQuery, response=AttachmentOut,
             many=True, summary=f"The attachments of a {kind.kind}, newest first")
    def list_attachments(ctx: RequestContext, record_id: str) -> ListResult:
        load_record(ctx, record_id)
        stmt = select(*(table.c[name] for name in _PUBLIC)).where(table.c.record_id == record_id)
        page = ctx.page(stmt, [SortKey("created_at", table.c.created_at, descending=True),
                               SortKey("id", table.c.id, descending=True)], fingerprint=f"attachments:{record_id}")
        return ListResult([r._asdict() for r in page.rows], page.next_page_token)

    @api.get(f"{collection}/<attachment_id>", permission=kind.permission("view"), produces=_OCTET_STREAM,
             summary="Download an attachment (always as a download, never rendered inline)")
    def download_attachment(ctx: RequestContext, record_id: str, attachment_id: str) -> Response:
        """Download an attachment's bytes, streamed, with the Content-Type it was uploaded with,
        `Content-Disposition: attachment` and `X-Content-Type-Options: nosniff`."""
        row = load_attachment(ctx, record_id, attachment_id)
        source = store()
        try:
            chunks = source.open(row.storage_key)
        except BlobNotFound:
            log.error("attachment %s has no blob: store=%r storage_key=%s", row.id, source, row.storage_key)
            raise Problem(404, "This attachment's content is no longer available.") from None
        except StorageError:
            log.exception("attachment %s could not be read: store=%r", row.id, source)
            raise Problem(503, "The attachment store is unavailable; retry shortly.",
                          headers={"Retry-After": "5"}) from None
        headers = {
            "Content-Length": str(row.size),
            "Content-Disposition": content_disposition(row.filename),
            "X-Content-Type-Options": "nosniff",
            # Should anything render it anyway: no scripts, no plugins, an opaque origin.
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        }
        return Response(chunks, status=200, content_type=row.content_type, headers=headers,
                        direct_passthrough=True)

    @api.delete(f"{collection}/<attachment_id>", permission=kind.permission("edit"), status=204,
                summary="Delete an attachment")
    def delete_attachment(ctx: RequestContext, record_id: str, attachment_id: str) -> None:
        """Delete an attachment: its metadata now, its bytes once that is committed."""
        row = load_attachment(ctx, record_id, attachment_id)
        result: Any = ctx.session.execute(delete(table).where(table.c.id == row.id))
        if result.rowcount != 1:  # deleted by a concurrent request
            raise Problem(404, f"No attachment with id {attachment_id!r} on this {kind.kind}.")
        _Outcome.when_done(ctx.session, committed=_discard_blob(store(), row.storage_key, "attachment deleted"))

    return api

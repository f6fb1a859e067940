"""Attachments of pipeline records: ``/v1/{records}/{id}/attachments[/{aid}]``.

Metadata rows live in the service's ``attachments`` table (cascade-deleted with their
record); the bytes live in an ``AttachmentStore`` (``crm_pipeline.storage``). This module is the
domain (no Flask); ``crm_pipeline.attachment_routes`` is its web edge (the multipart form, the
streamed response, the app's store).

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
from typing import IO, Any

from marshmallow import Schema, fields, validate
from sqlalchemy import Table, delete, event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from crm_kit.db import utcnow
from crm_kit.errors import Invalid
from crm_kit.web import limits
from crm_kit.web.fields import Timestamp
from crm_kit.web.pagination import PageQuery
from crm_pipeline.errors import AttachmentContentGone, AttachmentTooLarge, StoreUnavailable, UnknownAttachment
from crm_pipeline.kind import RecordKind
from crm_pipeline.storage import AttachmentStore, BlobNotFound, StorageError, UploadTooLarge, new_key

log = logging.getLogger(__name__)

MAX_FILENAME = 255
MAX_TYPE = 100
_FALLBACK_FILENAME = "attachment"
OCTET_STREAM = "application/octet-stream"
_NAME_CHARS = r"[A-Za-z0-9!#$&^_.+-]{1,100}"  # RFC 6838 restricted-name
_MEDIA_TYPE = re.compile(rf"{_NAME_CHARS}/{_NAME_CHARS}")
_CHARSET = re.compile(r"[A-Za-z0-9!#$%&'+^_`{}~.-]{1,40}")
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


PUBLIC = tuple(AttachmentOut().fields)


class AttachmentListQuery(PageQuery):
    """``page_size`` and ``page_token``."""


# -- input cleaning ------------------------------------------------------------------------------


def sanitize_filename(raw: str | None) -> str:
    """A safe display name from a client's filename: its last path segment, without control
    and invisible format characters, at most 255 characters (the extension is kept)."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if is_visible(ch)).strip()
    if not name.strip("."):
        return _FALLBACK_FILENAME
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and 0 < len(extension) <= 16:
            name = stem[: MAX_FILENAME - len(extension) - 1].rstrip() + "." + extension
        else:
            name = name[:MAX_FILENAME].rstrip()
    return name


def is_visible(ch: str) -> bool:
    """Whether ``ch`` may stand in a name or type a user sees (no control or invisible format character)."""
    category = unicodedata.category(ch)
    if category in ("Cc", "Cs", "Co", "Zl", "Zp"):
        return False
    return category != "Cf" or ch in _KEEP_FORMAT


def clean_content_type(mimetype: str | None, params: Mapping[str, str] | None = None) -> str:
    """The part's media type (lower case, with its charset if it had a valid one), or
    ``application/octet-stream`` when it is missing or not a well-formed media type."""
    mimetype = (mimetype or "").strip().lower()
    if not _MEDIA_TYPE.fullmatch(mimetype):
        return OCTET_STREAM
    charset = (params or {}).get("charset", "")
    if charset and _CHARSET.fullmatch(charset):
        return f"{mimetype}; charset={charset.lower()}"
    return mimetype


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


# -- what the routes do ------------------------------------------------------------------------------


def store_upload(session: Session, store: AttachmentStore, table: Table, record_id: str, *, stream: IO[bytes],
                 filename: str | None, mimetype: str | None, mimetype_params: Mapping[str, str] | None,
                 attachment_type: str, user_id: str, limit: int) -> dict[str, Any]:
    """Store a file of a record (at most ``limit`` bytes: ``AttachmentTooLarge``; the store down:
    ``StoreUnavailable``; empty: ``Invalid``) and insert its row; the public fields of the row.

    The blob is written first; it goes again unless this session's transaction commits."""
    key = new_key()
    try:
        size, sha256 = store.put(key, stream, limit)
    except UploadTooLarge:
        raise AttachmentTooLarge(limit) from None
    except StorageError:
        log.exception("attachment upload could not be stored: store=%r", store)
        raise StoreUnavailable() from None
    _Outcome.when_done(session, rolled_back=_discard_blob(store, key, "upload not saved"))
    if size == 0:
        raise Invalid.of_field("file", "The file is empty.")
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()), "record_id": record_id,
        "filename": sanitize_filename(filename),
        "content_type": clean_content_type(mimetype, mimetype_params),
        "type": attachment_type, "size": size, "sha256": sha256, "storage_key": key,
        "created_at": utcnow(), "created_by": user_id,
    }
    session.execute(insert(table).values(**row))
    return {k: row[k] for k in PUBLIC}


def find_attachment(session: Session, table: Table, kind: RecordKind, record_id: str, attachment_id: str) -> Any:
    """The attachment ``attachment_id`` of the record (``UnknownAttachment`` when it has none such)."""
    row = session.execute(select(table).where(table.c.id == attachment_id, table.c.record_id == record_id)).first()
    if row is None:
        raise UnknownAttachment(attachment_id, kind.kind)
    return row


def open_content(store: AttachmentStore, row: Any) -> Any:
    """The attachment's bytes, as chunks (``AttachmentContentGone`` when the store lost them,
    ``StoreUnavailable`` when it cannot be read now)."""
    try:
        return store.open(row.storage_key)
    except BlobNotFound:
        log.error("attachment %s has no blob: store=%r storage_key=%s", row.id, store, row.storage_key)
        raise AttachmentContentGone() from None
    except StorageError:
        log.exception("attachment %s could not be read: store=%r", row.id, store)
        raise StoreUnavailable() from None


def delete_attachment(session: Session, store: AttachmentStore, table: Table, kind: RecordKind, row: Any) -> None:
    """Delete an attachment: its row now, its bytes once that is committed (``UnknownAttachment``
    when a concurrent call deleted it first)."""
    result: Any = session.execute(delete(table).where(table.c.id == row.id))
    if result.rowcount != 1:
        raise UnknownAttachment(row.id, kind.kind)
    _Outcome.when_done(session, committed=_discard_blob(store, row.storage_key, "attachment deleted"))


def delete_blobs_of_record(session: Session, store: AttachmentStore, table: Table, record_id: str) -> None:
    """Call in the transaction that deletes a record: the rows of its attachments go with it
    (foreign key cascade) and, once that transaction commits, so do their blobs."""
    for key in session.execute(select(table.c.storage_key).where(table.c.record_id == record_id)).scalars():
        _Outcome.when_done(session, committed=_discard_blob(store, key, "record deleted"))

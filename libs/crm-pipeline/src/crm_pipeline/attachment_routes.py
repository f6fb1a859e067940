"""The attachment routes: ``/v1/{records}/{id}/attachments[/{aid}]`` (the web edge of
``crm_pipeline.attachments``): the multipart form, the streamed download, the upload limit and
the store each app keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, current_app, has_app_context, request
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from crm_kit.errors import Invalid
from crm_kit.settings import (
    MULTIPART_OVERHEAD,  # boundaries, part headers and `type` around the file
    ConfigError,
)
from crm_kit.web import Api, ListResult, Reply, RequestContext, SortKey
from crm_kit.web.app import route_of_request
from crm_kit.web.http import content_disposition
from crm_pipeline.attachments import (
    MAX_TYPE,
    OCTET_STREAM,
    PUBLIC,
    AttachmentListQuery,
    AttachmentOut,
    delete_blobs_of_record,
    find_attachment,
    is_visible,
    log,
    open_content,
    store_upload,
)
from crm_pipeline.attachments import delete_attachment as remove_attachment
from crm_pipeline.errors import AttachmentTooLarge
from crm_pipeline.kind import RecordKind
from crm_pipeline.queries import load_visible
from crm_pipeline.storage import AttachmentStore

StoreFactory = Callable[[], AttachmentStore]

MAX_BODY_CEILING = 1024 * 1024 * 1024  # what the edge lets through before the app's own limit applies
_MAX_PARTS = 16
_STORES = "crm_attachments"  # app.extensions key: {kind.plural: AttachmentStore}


def _read_form() -> tuple[Any, str]:
    """The ``file`` part and the ``type`` field of the multipart body (``Invalid`` naming what is wrong)."""
    files, form = request.files, request.form  # parses the body (RequestEntityTooLarge -> 413)
    for name in list(files) + list(form):
        if name not in ("file", "type"):
            raise Invalid.of_field(name, "Unknown field.", f"Unknown field {name!r}: send only `file` and `type`.")
    uploads = files.getlist("file")
    if not uploads:
        if "file" in form:
            raise Invalid.of_field("file", "Must be a file part (with a filename).")
        raise Invalid.of_field("file", "Missing data for required field.", "A file part named `file` is required.")
    if len(uploads) > 1:
        raise Invalid.of_field("file", "Send one file per request.")
    if "type" in files:
        raise Invalid.of_field("type", "Must be a text field, not a file.")
    types = form.getlist("type")
    if not types:
        raise Invalid.of_field("type", "Missing data for required field.", "The text field `type` is required.")
    if len(types) > 1:
        raise Invalid.of_field("type", "Send `type` once.")
    kind = types[0].strip()
    if not 1 <= len(kind) <= MAX_TYPE:
        raise Invalid.of_field("type", f"Length must be between 1 and {MAX_TYPE}.")
    if any(not is_visible(ch) for ch in kind):
        raise Invalid.of_field("type", "Must not contain control characters.")
    return uploads[0], kind


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
    if store is not None:
        delete_blobs_of_record(session, store, tables["attachments"], record_id)


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
            raise AttachmentTooLarge(limit)


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
        return find_attachment(ctx.session, table, kind, record_id, attachment_id)

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
        row = store_upload(ctx.session, store(), table, record_id, stream=upload.stream, filename=upload.filename,
                           mimetype=upload.mimetype, mimetype_params=upload.mimetype_params,
                           attachment_type=attachment_type, user_id=ctx.user.user_id,
                           limit=int(ctx.settings["CRM_MAX_UPLOAD_BYTES"]))
        return Reply(row, headers={"Location": location(record_id, row["id"])})

    api.upload_handler = upload_attachment

    @api.get(collection, permission=kind.permission("view"), query=AttachmentListQuery, response=AttachmentOut,
             many=True, summary=f"The attachments of a {kind.kind}, newest first")
    def list_attachments(ctx: RequestContext, record_id: str) -> ListResult:
        load_record(ctx, record_id)
        stmt = select(*(table.c[name] for name in PUBLIC)).where(table.c.record_id == record_id)
        page = ctx.page(stmt, [SortKey("created_at", table.c.created_at, descending=True),
                               SortKey("id", table.c.id, descending=True)], fingerprint=f"attachments:{record_id}")
        return ListResult([r._asdict() for r in page.rows], page.next_page_token)

    @api.get(f"{collection}/<attachment_id>", permission=kind.permission("view"), produces=OCTET_STREAM,
             summary="Download an attachment (always as a download, never rendered inline)")
    def download_attachment(ctx: RequestContext, record_id: str, attachment_id: str) -> Response:
        """Download an attachment's bytes, streamed, with the Content-Type it was uploaded with,
        `Content-Disposition: attachment` and `X-Content-Type-Options: nosniff`."""
        row = load_attachment(ctx, record_id, attachment_id)
        chunks = open_content(store(), row)
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
        remove_attachment(ctx.session, store(), table, kind, row)

    return api

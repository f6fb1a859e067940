"""The printing routes: ``GET {records}/<id>/templates`` and ``POST {records}/<id>/print`` (the web
edge of ``crm_pipeline.printing``: the request's Accept, the document as a response)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Response, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import Table

from crm_catalogue_view import CatalogueView
from crm_kit.web import Api, ListResult, Problem, RequestContext, limits
from crm_kit.web.fields import Text
from crm_pipeline.api import Presenter
from crm_pipeline.kind import RecordKind
from crm_pipeline.printing import (
    HTML,
    PDF,
    TEMPLATE_BODY_LENGTH,
    TEMPLATE_KINDS,
    PrintJob,
    RenderLimits,
    check_preview,
    document_filename,
    print_document,
    saved_template,
    template_item,
    templates_at_stage,
)
from crm_pipeline.queries import load_visible
from crm_pipeline.records import Records
from crm_pipeline.schemas import record_schemas


class TemplatesQuery(Schema):
    kind = fields.String(validate=validate.OneOf(TEMPLATE_KINDS))


class TemplateOut(Schema):
    # The catalogue's limits (the validators only document them: this is a response).
    id = fields.String(validate=limits.ID)
    kind = fields.String(validate=validate.OneOf(TEMPLATE_KINDS))
    name = fields.String(validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH))
    subject = fields.String(allow_none=True, validate=validate.Length(max=500))


class InlineTemplateIn(Schema):
    """A template that is not saved: rendered once, stored nowhere (``catalogue:admin`` only)."""

    kind = fields.String(required=True, validate=validate.OneOf(TEMPLATE_KINDS))
    subject = Text(load_default=None, allow_none=True, validate=validate.Length(max=500),
                   metadata={"description": "Email templates only; the document's title."})
    body = Text(multiline=True, load_default="", validate=validate.Length(max=TEMPLATE_BODY_LENGTH),
                metadata={"description": "Jinja template text; the record is `lead`/`opportunity` and `record`."})


class PrintIn(Schema):
    template_id = fields.String(validate=validate.Length(min=1, max=36),
                                metadata={"description": "A saved template visible at the record's stage."})
    template = fields.Nested(InlineTemplateIn, metadata={
        "description": "Instead of template_id: an unsaved template to preview (needs catalogue:admin). "
                       "A syntax error is a 422 whose error has the body's `line`."})

    @validates_schema
    def _one_template(self, data: dict[str, Any], **_: Any) -> None:
        if ("template_id" in data) == ("template" in data):
            raise ValidationError("Send either template_id or template.", "template_id")


def build_printing_api(kind: RecordKind, tables: Mapping[str, Table], view: CatalogueView | None = None,
                       limits: RenderLimits | None = None) -> Api:
    """``GET {records}/<id>/templates`` and ``POST {records}/<id>/print`` for ``kind``."""
    api = Api(kind.plural)
    base = kind.collection_path
    view = view or CatalogueView()
    limits = limits or RenderLimits()
    table = tables["records"]
    present = Presenter(kind, Records(kind, tables, view))
    out = record_schemas(kind).out()

    @api.get(f"{base}/<record_id>/templates", permission=kind.permission("view"), query=TemplatesQuery,
             response=TemplateOut, many=True, summary=f"Templates visible at the {kind.kind}'s current stage")
    def list_templates(ctx: RequestContext, record_id: str) -> ListResult:
        row = load_visible(ctx.session, table, kind, ctx.user, record_id)
        found = templates_at_stage(ctx.session, view, kind, row.stage_id, ctx.query.get("kind"))
        return ListResult([template_item(t) for t in found], None)

    @api.post(f"{base}/<record_id>/print", permission=kind.permission("view"), body=PrintIn, status=200,
              idempotent=False, produces=HTML, errors=(406,),
              summary=f"The {kind.kind} rendered with a template (text/html, or application/pdf by Accept)")
    def print_record(ctx: RequestContext, record_id: str) -> Response:
        # Printing changes nothing, so a retry simply renders again: no Idempotency-Key
        # protocol (its replay store keeps text, not PDF bytes).
        media_type = negotiate()
        inline = ctx.body.get("template")
        if inline is not None:
            check_preview(ctx.user)
        row = load_visible(ctx.session, table, kind, ctx.user, record_id)
        if inline is not None:
            name = str(inline.get("subject") or "preview")
            body, field = str(inline["body"]), "template.body"
        else:
            name, body = saved_template(ctx.session, view, kind, row.stage_id, ctx.body["template_id"])
            field = "template_id"
        # The record exactly as GET shows it, as JSON types: the template sees data, not rows.
        record = json.loads(json.dumps(out.dump(present.one(ctx, row)), default=str))
        data = print_document(PrintJob(body=body, title=name, variables=("record", kind.kind), record=record,
                                       media_type=media_type, limits=limits), field)
        resp = Response(data, status=200, mimetype=media_type)
        extension = "pdf" if media_type == PDF else "html"
        resp.headers["Content-Disposition"] = f'inline; filename="{document_filename(name)}.{extension}"'
        if media_type == HTML:
            # Template text is HTML its author wrote; opened on its own it runs no script.
            resp.headers["Content-Security-Policy"] = ("sandbox; default-src 'none'; img-src data: https:; "
                                                       "style-src 'unsafe-inline'; font-src data:")
        return resp

    return api


def negotiate() -> str:
    """HTML or PDF, whichever the request's Accept prefers (HTML when it has no preference); 406
    when it allows neither."""
    accept = request.accept_mimetypes
    best = accept.best_match([HTML, PDF]) if accept else HTML  # no Accept (or an empty one): anything goes
    if best is None:
        raise Problem(406, f"This endpoint answers {HTML} or {PDF}; the request's Accept header allows neither.")
    return best

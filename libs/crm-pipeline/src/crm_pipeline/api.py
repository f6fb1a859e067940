"""HTTP routes of pipeline records, declared once for any kind."""

from __future__ import annotations

import uuid
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import Table, delete, select, update

from crm_kit.db import utcnow
from crm_kit.web import Api, ListResult, Problem, Reply, RequestContext, SortKey, check_if_match
from crm_kit.web.fields import Timestamp
from crm_kit.web.pagination import PageQuery
from crm_pipeline.events import emit
from crm_pipeline.kind import RecordKind


class RecordIn(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    description = fields.String(load_default="", validate=validate.Length(max=20000))


class RecordPatch(Schema):
    title = fields.String(validate=validate.Length(min=1, max=500))
    description = fields.String(validate=validate.Length(max=20000))


class RecordOut(Schema):
    id = fields.String()
    title = fields.String()
    description = fields.String()
    owner_id = fields.String()
    office_id = fields.String()
    version = fields.Integer()
    created_at = Timestamp()
    created_by = fields.String()
    modified_at = Timestamp()
    modified_by = fields.String()


def build_api(kind: RecordKind, table: Table) -> Api:
    """The routes of ``kind``: create, list, read, update, delete."""
    api = Api(kind.plural)
    base = kind.collection_path
    out = RecordOut()

    def load(ctx: RequestContext, record_id: str) -> Any:
        row = ctx.session.execute(select(table).where(table.c.id == record_id)).first()
        if row is None:
            raise Problem(404, f"No {kind.kind} with id {record_id!r}.")
        return row

    @api.post(base, permission=kind.permission("create"), body=RecordIn, response=out,
              summary=f"Create a {kind.kind}")
    def create_record(ctx: RequestContext) -> Reply:
        now = utcnow()
        user = ctx.user
        values = {
            "id": str(uuid.uuid4()), "title": ctx.body["title"], "description": ctx.body["description"],
            "owner_id": user.user_id, "office_id": user.office_id, "version": 1,
            "created_at": now, "created_by": user.user_id, "modified_at": now, "modified_by": user.user_id,
        }
        ctx.session.execute(table.insert().values(**values))
        row = load(ctx, values["id"])
        emit(ctx.session, kind, "created", row, user)
        return Reply(row._asdict(), headers={"Location": f"{base}/{values['id']}"})

    @api.get(base, permission=kind.permission("view"), query=PageQuery, response=out, many=True,
             summary=f"List {kind.plural}, most recently modified first")
    def list_records(ctx: RequestContext) -> ListResult:
        page = ctx.page(select(table), [SortKey("modified_at", table.c.modified_at, descending=True),
                                         SortKey("id", table.c.id, descending=True)])
        return ListResult([row._asdict() for row in page.rows], page.next_page_token)

    @api.get(f"{base}/<record_id>", permission=kind.permission("view"), response=out,
             summary=f"Read a {kind.kind}")
    def get_record(ctx: RequestContext, record_id: str) -> dict[str, Any]:
        return load(ctx, record_id)._asdict()

    @api.patch(f"{base}/<record_id>", permission=kind.permission("edit"), body=RecordPatch, response=out,
               summary=f"Change a {kind.kind}")
    def patch_record(ctx: RequestContext, record_id: str) -> dict[str, Any]:
        row = load(ctx, record_id)
        check_if_match(row.version)
        changes = {k: v for k, v in ctx.body.items() if getattr(row, k) != v}
        if not changes:
            return row._asdict()
        result: Any = ctx.session.execute(
            update(table).where(table.c.id == record_id, table.c.version == row.version)
            .values(**changes, version=row.version + 1, modified_at=utcnow(), modified_by=ctx.user.user_id)
        )
        if result.rowcount != 1:  # a concurrent writer got there between our read and write
            raise Problem(412, "The record changed while this request was processed; fetch it and retry.")
        row = load(ctx, record_id)
        emit(ctx.session, kind, "updated", row, ctx.user)
        return row._asdict()

    @api.delete(f"{base}/<record_id>", permission=kind.permission("delete"), status=204,
                summary=f"Delete a {kind.kind}")
    def delete_record(ctx: RequestContext, record_id: str) -> None:
        row = load(ctx, record_id)
        check_if_match(row.version)
        result: Any = ctx.session.execute(delete(table).where(table.c.id == record_id, table.c.version == row.version))
        if result.rowcount != 1:
            raise Problem(412, "The record changed while this request was processed; fetch it and retry.")
        emit(ctx.session, kind, "deleted", row, ctx.user)
        return None

    return api

"""The catalogue service. Foundation scope: the stages table and reading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import JSON, Boolean, Column, Integer, String, Table, UniqueConstraint, select

from crm_kafka.service import domain_service
from crm_kit.db import UTCDateTime, new_metadata
from crm_kit.web import Api, ListResult, RequestContext, SortKey
from crm_kit.web.pagination import PageQuery

metadata = new_metadata()
stages = Table(
    "stages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("code", String(100), nullable=False),
    Column("names", JSON, nullable=False),
    Column("index", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "code", name="uq_stages_kind_code"),
)


class StageOut(Schema):
    id = fields.String()
    code = fields.String()
    names = fields.Dict(keys=fields.String(), values=fields.String())
    name = fields.String()
    index = fields.Integer()
    active = fields.Boolean()
    version = fields.Integer()


class StageQuery(PageQuery):
    active = fields.Boolean()


api = Api("catalogue")


def _stage_list(kind: str) -> Any:
    def list_stages(ctx: RequestContext) -> ListResult:
        stmt = select(stages).where(stages.c.kind == kind)
        if "active" in ctx.query:
            stmt = stmt.where(stages.c.active == ctx.query["active"])
        page = ctx.page(stmt, [SortKey("index", stages.c.index), SortKey("id", stages.c.id)],
                        fingerprint=f"{kind}:{ctx.query.get('active')}")
        items = []
        for row in page.rows:
            item = row._asdict()
            item["name"] = item["names"].get(ctx.language(list(item["names"])), "") if item["names"] else ""
            items.append(item)
        return ListResult(items, page.next_page_token)

    list_stages.__name__ = f"list_{kind}_stages"
    list_stages.__doc__ = f"List {kind} stages, ordered by index."
    return list_stages


for _kind in ("lead", "opportunity"):
    api.get(f"/v1/{_kind}-stages", query=StageQuery, response=StageOut, many=True)(_stage_list(_kind))

SERVICE = domain_service(
    "catalogue", "Catalogue service", apis=[api], metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions",
)

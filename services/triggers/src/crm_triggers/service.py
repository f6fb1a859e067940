"""The triggers service. Foundation scope: the trigger rules table and listing it."""

from __future__ import annotations

from pathlib import Path

from marshmallow import Schema, fields
from sqlalchemy import JSON, Boolean, Column, Integer, String, Table, select

from crm_catalogue_view import catalogue_view_table, consumer_spec
from crm_kafka.service import domain_service
from crm_kafka.worker import WorkerPlan
from crm_kit.db import UTCDateTime, new_metadata
from crm_kit.web import Api, ListResult, RequestContext, SortKey
from crm_kit.web.fields import Timestamp
from crm_kit.web.pagination import PageQuery

metadata = new_metadata()
trigger_rules = Table(
    "trigger_rules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
)
catalogue_view_table(metadata)


class TriggerOut(Schema):
    id = fields.String()
    name = fields.String()
    kind = fields.String()
    active = fields.Boolean()
    version = fields.Integer()
    created_at = Timestamp()
    modified_at = Timestamp()


api = Api("triggers")


@api.get("/v1/triggers", permission="triggers:admin", query=PageQuery, response=TriggerOut, many=True)
def list_triggers(ctx: RequestContext) -> ListResult:
    """List trigger rules, newest first."""
    page = ctx.page(select(trigger_rules), [SortKey("created_at", trigger_rules.c.created_at, descending=True),
                                             SortKey("id", trigger_rules.c.id, descending=True)])
    return ListResult([row._asdict() for row in page.rows], page.next_page_token)


SERVICE = domain_service(
    "triggers", "Triggers service", apis=[api], metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions",
    worker_plan=lambda settings, database: WorkerPlan(service="triggers", consumers=[consumer_spec()]),
)

"""``GET /v1/leads/reports/funnel``: the funnel report (``crm_leads.funnel``), on the leads' reports api."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import Table

from crm_kit.web import Api, RequestContext, limits
from crm_kit.web.fields import Timestamp
from crm_leads.funnel import funnel
from crm_leads.kind import LEAD
from crm_pipeline.queries import visible


def add_funnel_report(api: Api, tables: Mapping[str, Table]) -> None:
    """The funnel of the leads the caller may see."""
    table = tables["records"]
    query, out = _funnel_schemas()

    @api.get(f"{LEAD.collection_path}/reports/funnel", permission=LEAD.permission("view"),
             query=query, response=out,
             summary="Leads created in [from, to), how many were converted and how fast, by source and owner")
    def funnel_report(ctx: RequestContext) -> dict[str, Any]:
        start, end = ctx.query.get("from"), ctx.query.get("to")
        return funnel(ctx.session, table, visible(table, ctx.user), start, end)


def _funnel_schemas() -> tuple[type[Schema], type[Schema]]:
    """The report's query and answer."""
    rates: dict[str, fields.Field] = {"created": fields.Integer(validate=limits.COUNT),
                                      "converted": fields.Integer(validate=limits.COUNT),
                                      "conversion_rate": fields.Float(allow_none=True),
                                      "median_seconds_to_convert": fields.Float(allow_none=True)}
    by_source = Schema.from_dict({"source_id": fields.String(allow_none=True, validate=limits.ID), **rates},
                                 name="FunnelBySource")
    by_owner = Schema.from_dict({"owner_id": fields.String(validate=limits.REF), **rates}, name="FunnelByOwner")
    out = Schema.from_dict({"from": Timestamp(allow_none=True), "to": Timestamp(allow_none=True), **rates,
                            "by_source": fields.List(fields.Nested(by_source)),
                            "by_owner": fields.List(fields.Nested(by_owner))}, name="LeadFunnel")
    query = Schema.from_dict({"from": Timestamp(), "to": Timestamp()}, name="LeadFunnelQuery")
    return query, out

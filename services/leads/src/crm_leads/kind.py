"""The lead: what the leads service has of its own, as the pipeline's plug-in (``RecordKind``).

A lead has no money. Converting one into an opportunity (``POST /v1/leads/{id}/convert``, step 1
of the conversion saga in ``crm_pipeline.conversion``) sets ``converted_opportunity_id`` and
``converted_at``; a converted lead then stays in end stages, whoever moves it. To convert into
an existing opportunity the worker keeps a copy of the opportunities (``opportunities``
consumer). The funnel report counts the conversions.

The routes are imported only when the api is built (``extend_api``, ``extend_reports``), so the
worker loads no web module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from marshmallow import fields
from sqlalchemy import Table

from crm_kafka.worker import ConsumerSpec
from crm_kit.web import limits
from crm_kit.web.fields import Timestamp
from crm_pipeline.errors import ConvertedLeadStaysInEndStages
from crm_pipeline.kind import LEAD_NAMES, OPPORTUNITY_NAMES
from crm_pipeline.records import Records
from crm_pipeline.references import OpportunityViews, opportunity_handler

if TYPE_CHECKING:
    from crm_kit.web import Api
    from crm_pipeline.api import RecordsApi


def stays_in_end_stages(row: Any, stage: Any) -> None:
    """A converted lead stays in end stages (409), whoever moves it (PATCH, bulk, a trigger)."""
    if row.converted_opportunity_id and not stage.attr("is_end"):
        raise ConvertedLeadStaysInEndStages(row.converted_opportunity_id)


def out_fields() -> dict[str, fields.Field]:
    """What a conversion set: read-only."""
    return {"converted_opportunity_id": fields.String(allow_none=True, dump_only=True, validate=limits.ID),
            "converted_at": Timestamp(allow_none=True, dump_only=True)}


def worker_consumers(records: Records, tables: Mapping[str, Table]) -> list[ConsumerSpec]:
    """The copy of the opportunities a lead may be converted into."""
    views = OpportunityViews(tables.get("opportunity_views"))
    return [ConsumerSpec("opportunities", [OPPORTUNITY_NAMES.topic], opportunity_handler(views))]


def extend_api(api: Api, parts: RecordsApi) -> None:
    """The conversion's route."""
    from crm_leads.conversion_routes import add_conversion

    add_conversion(api, parts)


def extend_reports(api: Api, tables: Mapping[str, Table]) -> None:
    """The funnel report."""
    from crm_leads.funnel_routes import add_funnel_report

    add_funnel_report(api, tables)


LEAD = replace(
    LEAD_NAMES,
    link_field="converted_opportunity_id",
    example={"title": "Acme - 3 welders for Rotterdam", "description": "Met at the trade fair."},
    import_columns=("Title", "Description"),
    stage_rule=stays_in_end_stages,
    out_fields=out_fields,
    worker_consumers=worker_consumers,
    extend_api=extend_api,
    extend_reports=extend_reports,
)

"""The opportunity: what the opportunities service has of its own, as the pipeline's plug-in
(``RecordKind``).

An opportunity has money (amount, currency, probability, expected close date: in its schemas,
filters, board and stage report) and, when a lead was converted into it, that ``lead_id``
(read-only, a filter of the list). Its worker makes (or links) the opportunity of each converted
lead (``conversions`` consumer: step 2 of the saga in ``crm_pipeline.conversion``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from marshmallow import fields
from sqlalchemy import Table

from crm_kafka.consumer import Dispatch
from crm_kafka.worker import ConsumerSpec
from crm_kit.web import limits
from crm_pipeline.conversion import conversion_handler
from crm_pipeline.kind import LEAD_NAMES, OPPORTUNITY_NAMES
from crm_pipeline.records import Records


def out_fields() -> dict[str, fields.Field]:
    """The lead it was converted from: read-only."""
    return {"lead_id": fields.String(allow_none=True, dump_only=True, validate=limits.ID, metadata={
        "description": "The lead this opportunity was converted from (read-only: set by the conversion)."})}


def worker_consumers(records: Records, tables: Mapping[str, Table]) -> list[ConsumerSpec]:
    """The converted leads' opportunities, made or linked once."""
    return [ConsumerSpec("conversions", [LEAD_NAMES.topic],
                         Dispatch({LEAD_NAMES.event_type("converted"): conversion_handler(records)}))]


OPPORTUNITY = replace(
    OPPORTUNITY_NAMES,
    money=True,
    link_field="lead_id",
    list_filters=("lead_id",),
    example={"title": "Acme - 3 welders for Rotterdam", "description": "Met at the trade fair.", "amount": 12500.5,
             "currency": "EUR", "probability": 60, "expected_close_date": "2027-01-31"},
    import_columns=("Title", "Amount", "Currency"),
    out_fields=out_fields,
    worker_consumers=worker_consumers,
)

"""``pipeline_service(kind)``: a whole records service for one kind."""

from __future__ import annotations

from pathlib import Path

from crm_catalogue_view import catalogue_view_table, consumer_spec
from crm_kafka.consumer import dispatch
from crm_kafka.service import domain_service
from crm_kafka.worker import ConsumerSpec, WorkerPlan
from crm_kit.db import Database, new_metadata
from crm_kit.imports import ServiceImports
from crm_kit.service import ServiceSpec
from crm_kit.settings import Settings
from crm_pipeline.api import build_api
from crm_pipeline.attachments import build_attachments_api
from crm_pipeline.bulk import importer
from crm_pipeline.commands import command_handler
from crm_pipeline.conversion import conversion_handler
from crm_pipeline.kind import RecordKind
from crm_pipeline.printing import build_printing_api
from crm_pipeline.records import Records
from crm_pipeline.references import (
    LINKING_TOPIC,
    OPPORTUNITIES_TOPIC,
    OpportunityViews,
    file_handler,
    opportunity_handler,
)
from crm_pipeline.reports import build_reports_api
from crm_pipeline.storage import store_from_environment
from crm_pipeline.tables import pipeline_tables


def pipeline_service(kind: RecordKind, *, title: str, migrations: Path) -> ServiceSpec:
    """The ServiceSpec of the ``kind`` records service (its migrations live with it).

    Its worker keeps the catalogue copy and what it knows of companies and contacts (reference
    checks; a deleted one is cleared from the records naming it), applies the triggers'
    commands, runs the kind's CSV imports (``crm_kit.imports``) and, for opportunities, creates (or
    links) the opportunities of converted leads; for leads, it knows the opportunities (converting
    into an existing one).
    """
    metadata = new_metadata()
    tables = pipeline_tables(metadata, kind.plural)
    catalogue_view_table(metadata)
    records = Records(kind, tables)
    imports = ServiceImports(metadata, [importer(kind, tables)])

    def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
        consumers = [consumer_spec(), ConsumerSpec("commands", [kind.commands_topic], command_handler(records)),
                     ConsumerSpec("files", [LINKING_TOPIC], file_handler(records))]
        if kind.is_lead:
            consumers.append(ConsumerSpec("opportunities", [OPPORTUNITIES_TOPIC],
                                          opportunity_handler(OpportunityViews(tables.get("opportunity_views")))))
        else:
            consumers.append(ConsumerSpec("conversions", ["crm.leads.v1"],
                                          dispatch({"lead.converted": conversion_handler(records)})))
        return WorkerPlan(service=kind.plural, consumers=consumers, extra_loops=[imports.loop(database)])

    apis = [build_api(kind, tables),
            build_attachments_api(kind, tables, lambda: store_from_environment(kind.plural)),
            build_printing_api(kind, tables),
            build_reports_api(kind, tables),
            imports.api()]
    return domain_service(kind.plural, title, apis=apis, metadata=metadata, migrations=migrations,
                          worker_plan=worker_plan)

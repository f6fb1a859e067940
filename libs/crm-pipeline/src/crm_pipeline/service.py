"""``pipeline_service(kind)``: a whole records service for one kind (its plug-in: ``RecordKind``).

The worker (``pipeline_worker_plan``) and the api (``pipeline_apis``) are built apart: the
routes - the web edge, and with it Flask - are imported only when the api builds its app, so a
worker process never loads the web stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Table

from crm_catalogue_view import catalogue_view_table, consumer_spec
from crm_events.topics import LINKING
from crm_kafka.service import domain_service
from crm_kafka.worker import ConsumerSpec, WorkerPlan
from crm_kit.db import Database, new_metadata
from crm_kit.imports import ServiceImports
from crm_kit.service import ServiceSpec
from crm_kit.settings import Settings
from crm_pipeline.bulk import importer
from crm_pipeline.commands import command_handler
from crm_pipeline.kind import RecordKind
from crm_pipeline.records import Records
from crm_pipeline.references import file_handler
from crm_pipeline.tables import pipeline_tables

if TYPE_CHECKING:
    from crm_kit.web import Api


def pipeline_service(kind: RecordKind, *, title: str, migrations: Path) -> ServiceSpec:
    """The ServiceSpec of the ``kind`` records service (its migrations live with it)."""
    metadata = new_metadata()
    tables = pipeline_tables(metadata, kind.plural)
    catalogue_view_table(metadata)
    imports = ServiceImports(metadata, [importer(kind, tables)])
    return domain_service(kind.plural, title, apis=pipeline_apis(kind, tables, imports), metadata=metadata,
                          migrations=migrations, worker_plan=pipeline_worker_plan(kind, tables, imports))


def pipeline_worker_plan(kind: RecordKind, tables: Mapping[str, Table],
                         imports: ServiceImports) -> Callable[[Settings, Database], WorkerPlan]:
    """The worker of the ``kind`` records service.

    It keeps the catalogue copy and what it knows of companies and contacts (reference checks; a
    deleted one is cleared from the records naming it), applies the triggers' commands, runs the
    kind's CSV imports (``crm_kit.imports``), and has the kind's own consumers
    (``RecordKind.worker_consumers``: the leads' copy of the opportunities, the opportunities'
    conversions).
    """
    records = Records(kind, tables)

    def plan(settings: Settings, database: Database) -> WorkerPlan:
        consumers = [consumer_spec(), ConsumerSpec("commands", [kind.commands_topic], command_handler(records)),
                     ConsumerSpec("files", [LINKING], file_handler(records)), *kind.worker_consumers(records, tables)]
        return WorkerPlan(service=kind.plural, consumers=consumers, extra_loops=[imports.loop(database)])

    return plan


def pipeline_apis(kind: RecordKind, tables: Mapping[str, Table],
                  imports: ServiceImports) -> Callable[[], list[Api]]:
    """Builds every route of the ``kind`` records service: records, attachments, printing, reports
    and imports, with the kind's own (called by the api process when it builds its app; the worker
    never does)."""

    def build() -> list[Api]:
        from crm_pipeline.api import build_api
        from crm_pipeline.attachment_routes import build_attachments_api
        from crm_pipeline.printing_routes import build_printing_api
        from crm_pipeline.reports import build_reports_api
        from crm_pipeline.storage import store_from_environment

        return [build_api(kind, tables),
                build_attachments_api(kind, tables, lambda: store_from_environment(kind.plural)),
                build_printing_api(kind, tables),
                build_reports_api(kind, tables),
                imports.api()]

    return build

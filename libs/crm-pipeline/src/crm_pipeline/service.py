"""``pipeline_service(kind)``: a whole records service for one kind."""

from __future__ import annotations

from pathlib import Path

from crm_catalogue_view import catalogue_view_table, consumer_spec
from crm_kafka.service import domain_service
from crm_kafka.worker import WorkerPlan
from crm_kit.db import Database, new_metadata
from crm_kit.service import ServiceSpec
from crm_kit.settings import Settings
from crm_pipeline.api import build_api
from crm_pipeline.kind import RecordKind
from crm_pipeline.tables import records_table


def pipeline_service(kind: RecordKind, *, title: str, migrations: Path) -> ServiceSpec:
    """The ServiceSpec of the ``kind`` records service (its migrations live with it)."""
    metadata = new_metadata()
    table = records_table(metadata, kind.plural)
    catalogue_view_table(metadata)

    def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
        return WorkerPlan(service=kind.plural, consumers=[consumer_spec()])

    return domain_service(kind.plural, title, apis=[build_api(kind, table)], metadata=metadata,
                          migrations=migrations, worker_plan=worker_plan)

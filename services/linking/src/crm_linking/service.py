"""The linking service: files (companies, contacts, job orders, placements, activities),
their links to leads and opportunities, and its read model of those records.

The wiring only: the routes (``file_routes``, ``link_routes`` and the kit's imports), and the
worker's two consumers - ``records`` (``records.RECORDS``: the read model of leads and
opportunities, each record's main contact on its contacts tab, and ``reactions.py``: timelines,
deletions, conversions) and ``catalogue`` (its copy of the catalogue) - and
the loop that runs the CSV imports of companies and contacts (``crm_kit.imports``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from crm_catalogue_view import consumer_spec
from crm_kafka.service import domain_service
from crm_kafka.worker import WorkerPlan
from crm_kit.db import Database
from crm_kit.imports import ServiceImports
from crm_kit.settings import Settings
from crm_linking.files import BULK_CREATABLE, SPECS, file_importer
from crm_linking.records import RECORDS
from crm_linking.tables import metadata

if TYPE_CHECKING:
    from crm_kit.web import Api

# CSV imports of the files that have a bulk create (crm_kit.imports): routes and a worker loop.
IMPORTS = ServiceImports(metadata, [file_importer(SPECS[c]) for c in BULK_CREATABLE])


def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
    return WorkerPlan(service="linking", consumers=[
        RECORDS,
        consumer_spec(),
    ], extra_loops=[IMPORTS.loop(database)])


def apis() -> list[Api]:
    """The routes: the web edge, imported only when the api is built, so the worker (and a tool
    reading the worker plan) never loads Flask."""
    from crm_linking.file_routes import build_files_api
    from crm_linking.link_routes import build_links_api

    return [build_files_api(), build_links_api(), IMPORTS.api()]


SERVICE = domain_service(
    "linking", "Linking service", apis=apis, metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions", worker_plan=worker_plan,
)

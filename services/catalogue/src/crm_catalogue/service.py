"""The catalogue service: stages, the 8 tables per kind and templates of leads and opportunities.

It owns them and publishes every change on the catalogue topic (``crm_events.topics.CATALOGUE``);
its worker relays the outbox and learns from record events which stages are in use (``usage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crm_catalogue.seed import load_starter_data
from crm_catalogue.tables import metadata
from crm_catalogue.usage import usage_consumer
from crm_kafka.service import domain_service
from crm_kafka.worker import WorkerPlan
from crm_kit.db import Database
from crm_kit.settings import Settings


def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
    """The outbox relay and the stage usage consumer."""
    return WorkerPlan(service="catalogue", consumers=[usage_consumer()])


def apis() -> list[Any]:
    """The routes (the web edge, imported only when the api is built: the worker never loads Flask)."""
    from crm_catalogue.api import build_api

    return [build_api()]


SERVICE = domain_service(
    "catalogue", "Catalogue service", apis=apis, metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions", worker_plan=worker_plan,
    after_migrate=load_starter_data,
)

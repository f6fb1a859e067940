"""The webhooks service: endpoints subscribe to the platform's events and get them signed, in
order per record, retried until they are delivered; and the same events as a feed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crm_events.topics import LINKING, RECORD_TOPICS
from crm_kafka.service import domain_service
from crm_kafka.worker import ConsumerSpec, WorkerPlan
from crm_kit.db import Database
from crm_kit.settings import Settings
from crm_webhooks.delivery import dispatcher_loop
from crm_webhooks.ingest import handle
from crm_webhooks.tables import metadata


def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
    """One consumer takes the record and linking events in; the ``deliver`` loop sends them. The
    service publishes no events of its own: no relay."""
    return WorkerPlan(service="webhooks", consumers=[ConsumerSpec("events", [*RECORD_TOPICS, LINKING], handle)],
                      relay=False, extra_loops=[("deliver", dispatcher_loop(settings, database))])


def apis() -> list[Any]:
    """The routes (the web edge, imported only when the api is built: the worker never loads Flask)."""
    from crm_webhooks.api import build_webhooks_api
    from crm_webhooks.feed import build_feed_api

    return [build_webhooks_api(), build_feed_api()]


SERVICE = domain_service(
    "webhooks", "Webhooks service", apis=apis, metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions", worker_plan=worker_plan,
)

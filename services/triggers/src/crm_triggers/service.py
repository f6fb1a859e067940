"""The triggers service: automation rules for leads and opportunities, evaluated from their
events, with exactly-once actions, time-based firings and a loop guard."""

from __future__ import annotations

from pathlib import Path

from crm_catalogue_view import consumer_spec
from crm_kafka.service import domain_service
from crm_kafka.worker import WorkerPlan
from crm_triggers.api import build_triggers_api
from crm_triggers.tables import metadata

SERVICE = domain_service(
    "triggers", "Triggers service", apis=[build_triggers_api()], metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions",
    worker_plan=lambda settings, database: WorkerPlan(service="triggers", consumers=[consumer_spec()]),
)

"""The triggers service: automation rules for leads and opportunities, evaluated from their
events, with exactly-once actions, time-based firings and a loop guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crm_catalogue_view import consumer_spec
from crm_kafka.service import domain_service
from crm_kafka.worker import WorkerPlan
from crm_kit.db import Database
from crm_kit.settings import Settings
from crm_triggers.engine import record_event_handler
from crm_triggers.records import RECORDS
from crm_triggers.scheduler import scheduler_loop
from crm_triggers.tables import metadata


def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
    """The catalogue copy, the evaluation of record events, and the time-based scheduler."""
    return WorkerPlan(service="triggers",
                      consumers=[consumer_spec(), RECORDS.consumer("evaluate", record_event_handler)],
                      extra_loops=[("scheduler", scheduler_loop(database))])


def apis() -> list[Any]:
    """The routes (the web edge, imported only when the api is built: the worker never loads Flask)."""
    from crm_triggers.api import build_triggers_api
    from crm_triggers.dryrun import build_dryrun_api

    return [build_triggers_api(), build_dryrun_api()]


SERVICE = domain_service(
    "triggers", "Triggers service", apis=apis, metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions", worker_plan=worker_plan,
)

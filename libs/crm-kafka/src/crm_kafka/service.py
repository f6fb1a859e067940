"""``domain_service``: the ServiceSpec of a service that owns a database and talks Kafka.

A service states its name, routes, tables, migrations and worker plan; this wires the api
(database, readiness of database and Kafka), the worker and the migrations the same way
for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import MetaData

from crm_kafka.clients import kafka_ready_check
from crm_kafka.worker import WorkerPlan, run_worker
from crm_kit.consistency import ReadModels
from crm_kit.db import Database
from crm_kit.service import ServiceSpec
from crm_kit.settings import Settings

if TYPE_CHECKING:  # the web edge is imported by build_app alone: the worker never loads Flask through here
    from flask import Flask

    from crm_kit.web import Api


def domain_service(
    name: str,
    title: str,
    *,
    apis: Callable[[], Iterable[Api]],
    metadata: MetaData,
    migrations: Path,
    worker_plan: Callable[[Settings, Database], WorkerPlan] | None = None,
    after_migrate: Callable[[Settings], None] | None = None,
) -> ServiceSpec:
    """Describe a domain service; ``worker_plan`` builds its consumers (default: relay only).

    ``apis`` builds the service's route declarations when the app is built: a service's
    module imports its route modules (and so Flask) inside that function, so that loading
    the service to run its worker or its migrations never loads the web stack.
    """

    def build_app(settings: Settings) -> Flask:
        from crm_kafka.api import build_positions_api
        from crm_kit.web import create_app

        database = Database(settings.database_url)
        wait = settings["CRM_CONSISTENCY_WAIT"]
        app = create_app(
            name,
            settings,
            [*apis(), build_positions_api(name, database, wait)],
            database=database,
            readiness={"kafka": kafka_ready_check(settings.kafka_bootstrap, settings["CRM_KAFKA_EXTRA"])},
            openapi_title=title,
        )
        app.extensions["crm_database"] = database
        # The worker plan is where the consumers are declared: which read model reads which topic.
        app.extensions["crm_read_models"] = ReadModels(name, database, plan_for(settings, database).readers(), wait)
        return app

    def plan_for(settings: Settings, database: Database) -> WorkerPlan:
        return worker_plan(settings, database) if worker_plan else WorkerPlan(service=name)

    def worker(settings: Settings) -> int:
        database = Database(settings.database_url)
        return run_worker(settings, plan_for(settings, database), database)

    def plan(settings: Settings) -> WorkerPlan:
        return plan_for(settings, Database(settings.database_url))

    return ServiceSpec(name=name, title=title, build_app=build_app, role="domain", metadata=metadata,
                       migrations=migrations, run_worker=worker, after_migrate=after_migrate, worker_plan=plan)

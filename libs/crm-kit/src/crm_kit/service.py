"""What a service tells the kit about itself, so one CLI can run any of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData

from crm_kit.settings import Settings

if TYPE_CHECKING:  # only the api builds an app: a worker that reads its ServiceSpec does not load Flask
    from flask import Flask

ENTRY_POINT_GROUP = "crm.services"


@dataclass(frozen=True)
class ServiceSpec:
    """A service's name and the three things it can run: its api, its worker, its migrations.

    ``role`` is ``"domain"`` (own database and Kafka) or ``"gateway"``; it decides which
    settings are required.
    """

    name: str
    title: str
    build_app: Callable[[Settings], Flask]
    role: str = "domain"
    metadata: MetaData | None = None
    migrations: Path | None = None
    run_worker: Callable[[Settings], int] | None = None
    # Runs after the migrations, in the same `migrate` command (e.g. loading starter data once).
    after_migrate: Callable[[Settings], None] | None = None
    # What the worker would run (its consumers and loops), built without running or connecting:
    # the one declaration that tools and tests read the wiring from.
    worker_plan: Callable[[Settings], Any] | None = None


def find_service(name: str) -> ServiceSpec:
    """The installed service called ``name`` (entry point group ``crm.services``)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            spec = ep.load()
            if not isinstance(spec, ServiceSpec):
                raise TypeError(f"entry point {ep.value} is not a ServiceSpec")
            return spec
    known = ", ".join(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))) or "none"
    raise LookupError(f"no service named {name!r} is installed (installed: {known})")


def installed_services() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))

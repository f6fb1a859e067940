"""What ``crm-service console api`` runs (entry point group ``crm.services``)."""

from __future__ import annotations

from crm_console.app import create_app
from crm_kit.service import ServiceSpec

SERVICE = ServiceSpec(
    name="console",
    title="Console",
    role="console",
    build_app=create_app,
    migrations=None,
    run_worker=None,
)

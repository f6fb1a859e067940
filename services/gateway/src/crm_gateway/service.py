"""What ``crm-service gateway api`` runs (entry point group ``crm.services``)."""

from __future__ import annotations

from crm_gateway.app import create_app
from crm_kit.service import ServiceSpec

SERVICE = ServiceSpec(
    name="gateway",
    title="API gateway",
    role="gateway",
    build_app=create_app,
    migrations=None,
    run_worker=None,
)

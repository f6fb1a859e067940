"""The leads service: a pipeline records service of kind ``lead``."""

from pathlib import Path

from crm_pipeline import RecordKind, pipeline_service

KIND = RecordKind(kind="lead", plural="leads", topic="crm.leads.v1")
SERVICE = pipeline_service(KIND, title="Leads service",
                           migrations=Path(__file__).parent / "migrations" / "versions")

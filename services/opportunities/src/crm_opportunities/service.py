"""The opportunities service: a pipeline records service of kind ``opportunity``."""

from pathlib import Path

from crm_pipeline import RecordKind, pipeline_service

KIND = RecordKind(kind="opportunity", plural="opportunities", topic="crm.opportunities.v1")
SERVICE = pipeline_service(KIND, title="Opportunities service",
                           migrations=Path(__file__).parent / "migrations" / "versions")

"""The leads service: a pipeline records service of kind ``lead``."""

from pathlib import Path

from crm_pipeline import pipeline_service
from crm_pipeline.kind import LEAD

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
SERVICE = pipeline_service(LEAD, title="Leads service", migrations=MIGRATIONS)

"""The opportunities service: a pipeline records service of kind ``opportunity``."""

from pathlib import Path

from crm_pipeline import pipeline_service
from crm_pipeline.kind import OPPORTUNITY

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
SERVICE = pipeline_service(OPPORTUNITY, title="Opportunities service", migrations=MIGRATIONS)

"""The opportunities service: a pipeline records service of the kind ``OPPORTUNITY`` (its own
differences in ``kind``)."""

from pathlib import Path

from crm_opportunities.kind import OPPORTUNITY
from crm_pipeline import pipeline_service

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
SERVICE = pipeline_service(OPPORTUNITY, title="Opportunities service", migrations=MIGRATIONS)

"""The leads service: a pipeline records service of the kind ``LEAD`` (its own differences in ``kind``)."""

from pathlib import Path

from crm_leads.kind import LEAD
from crm_pipeline import pipeline_service

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
SERVICE = pipeline_service(LEAD, title="Leads service", migrations=MIGRATIONS)

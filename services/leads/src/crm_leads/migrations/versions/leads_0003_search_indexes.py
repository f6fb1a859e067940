"""leads: trigram indexes for simple search (PostgreSQL)

Created 2026-11-23.
"""

from crm_pipeline import schema_migrations

revision = "leads_0003"
down_revision = "leads_0002"
upgrade, downgrade = schema_migrations.search_indexes("leads")

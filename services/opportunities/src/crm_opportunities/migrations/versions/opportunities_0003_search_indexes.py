"""opportunities: trigram indexes for simple search (PostgreSQL)

Created 2026-11-23.
"""

from crm_pipeline import schema_migrations

revision = "opportunities_0003"
down_revision = "opportunities_0002"
upgrade, downgrade = schema_migrations.search_indexes("opportunities")

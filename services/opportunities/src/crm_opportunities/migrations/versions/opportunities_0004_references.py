"""opportunities: what it knows of companies and contacts (reference checks)

Created 2026-11-24.
"""

from crm_pipeline import schema_migrations

revision = "opportunities_0004"
down_revision = "opportunities_0003"
upgrade, downgrade = schema_migrations.reference_tables("opportunities")

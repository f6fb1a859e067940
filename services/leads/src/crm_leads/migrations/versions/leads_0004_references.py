"""leads: what it knows of companies and contacts (reference checks), of opportunities
(converting into an existing one), and one lead per opportunity

Created 2026-11-24.
"""

from crm_pipeline import schema_migrations

revision = "leads_0004"
down_revision = "leads_0003"
upgrade, downgrade = schema_migrations.reference_tables("leads")

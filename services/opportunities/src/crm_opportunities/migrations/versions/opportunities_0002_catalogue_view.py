"""opportunities: its copy of the catalogue

Created 2026-11-23.
"""

from crm_pipeline import schema_migrations

revision = "opportunities_0002"
down_revision = "opportunities_0001"
upgrade, downgrade = schema_migrations.catalogue_view()

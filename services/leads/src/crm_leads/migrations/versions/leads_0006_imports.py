"""leads: CSV imports (import_jobs, import_rows; crm_kit.imports)

Created 2026-12-06.
"""

from crm_pipeline import schema_migrations

revision = "leads_0006"
down_revision = "leads_0005"
upgrade, downgrade = schema_migrations.import_tables()

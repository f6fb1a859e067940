"""opportunities: CSV imports (import_jobs, import_rows; crm_kit.imports)

Created 2026-12-06.
"""

from crm_pipeline import schema_migrations

revision = "opportunities_0006"
down_revision = "opportunities_0005"
upgrade, downgrade = schema_migrations.import_tables()

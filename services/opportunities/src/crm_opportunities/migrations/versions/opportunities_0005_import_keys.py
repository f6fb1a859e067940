"""opportunities: idempotency keys of bulk creates (imports), unique per office

Created 2026-12-06.
"""

from crm_pipeline import schema_migrations

revision = "opportunities_0005"
down_revision = "opportunities_0004"
upgrade, downgrade = schema_migrations.import_keys("opportunities")

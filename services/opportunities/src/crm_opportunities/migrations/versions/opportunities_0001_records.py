"""opportunities: records, stage history, groups, attachments

Created 2026-11-23.
"""

from crm_pipeline import schema_migrations

revision = "opportunities_0001"
down_revision = None
branch_labels = ("opportunities",)
upgrade, downgrade = schema_migrations.records_tables("opportunities")

"""leads: records, stage history, groups, attachments

Created 2026-11-23.
"""

from crm_pipeline import schema_migrations

revision = "leads_0001"
down_revision = None
branch_labels = ("leads",)
upgrade, downgrade = schema_migrations.records_tables("leads")

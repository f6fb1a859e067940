"""leads: records, stage history, groups, attachments

Revision ID: leads_0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op

from crm_pipeline.tables import create_pipeline_tables

revision = "leads_0001"
down_revision = None
branch_labels = ("leads",)
depends_on = None


def upgrade() -> None:
    create_pipeline_tables(op, "leads")


def downgrade() -> None:
    for table in ("attachments", "record_groups", "stage_history", "leads"):
        op.drop_table(table)

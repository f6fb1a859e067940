"""opportunities: records, stage history, groups, attachments

Revision ID: opportunities_0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op

from crm_pipeline.tables import create_pipeline_tables

revision = "opportunities_0001"
down_revision = None
branch_labels = ("opportunities",)
depends_on = None


def upgrade() -> None:
    create_pipeline_tables(op, "opportunities")


def downgrade() -> None:
    for table in ("attachments", "record_groups", "stage_history", "opportunities"):
        op.drop_table(table)

"""opportunities: the records table

Revision ID: opportunities_0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op

from crm_pipeline.tables import create_records_table

revision = "opportunities_0001"
down_revision = None
branch_labels = ("opportunities",)
depends_on = None


def upgrade() -> None:
    create_records_table(op, "opportunities")


def downgrade() -> None:
    op.drop_table("opportunities")

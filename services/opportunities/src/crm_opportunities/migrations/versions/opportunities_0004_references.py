"""opportunities: what it knows of companies and contacts (reference checks)

Revision ID: opportunities_0004
Revises: opportunities_0003
Create Date: 2026-11-24
"""

from alembic import op

from crm_pipeline.tables import create_reference_tables, drop_reference_tables

revision = "opportunities_0004"
down_revision = "opportunities_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_reference_tables(op, "opportunities")


def downgrade() -> None:
    drop_reference_tables(op, "opportunities")

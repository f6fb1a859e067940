"""leads: what it knows of companies and contacts (reference checks), of opportunities
(converting into an existing one), and one lead per opportunity

Revision ID: leads_0004
Revises: leads_0003
Create Date: 2026-11-24
"""

from alembic import op

from crm_pipeline.tables import create_reference_tables, drop_reference_tables

revision = "leads_0004"
down_revision = "leads_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_reference_tables(op, "leads")


def downgrade() -> None:
    drop_reference_tables(op, "leads")

"""leads: trigram indexes for simple search (PostgreSQL)

Revision ID: leads_0003
Revises: leads_0002
Create Date: 2026-11-23
"""

from alembic import op

from crm_pipeline.tables import create_search_indexes, drop_search_indexes

revision = "leads_0003"
down_revision = "leads_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_search_indexes(op, "leads")


def downgrade() -> None:
    drop_search_indexes(op, "leads")

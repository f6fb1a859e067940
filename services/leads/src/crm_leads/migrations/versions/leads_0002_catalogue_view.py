"""leads: its copy of the catalogue

Revision ID: leads_0002
Revises: leads_0001
Create Date: 2026-11-23
"""

from alembic import op

from crm_catalogue_view import create_catalogue_view_table

revision = "leads_0002"
down_revision = "leads_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_catalogue_view_table(op)


def downgrade() -> None:
    op.drop_table("catalogue_view")

"""linking: CSV imports of companies and contacts (import_jobs, import_rows; crm_kit.imports)

Revision ID: linking_0004
Revises: linking_0003
Create Date: 2026-12-06
"""

from alembic import op

from crm_kit.imports import create_import_tables, drop_import_tables

revision = "linking_0004"
down_revision = "linking_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_import_tables(op)


def downgrade() -> None:
    drop_import_tables(op)

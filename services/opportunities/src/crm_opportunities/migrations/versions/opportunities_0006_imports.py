"""opportunities: CSV imports (import_jobs, import_rows; crm_kit.imports)

Revision ID: opportunities_0006
Revises: opportunities_0005
Create Date: 2026-12-06
"""

from alembic import op

from crm_kit.imports import create_import_tables, drop_import_tables

revision = "opportunities_0006"
down_revision = "opportunities_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_import_tables(op)


def downgrade() -> None:
    drop_import_tables(op)

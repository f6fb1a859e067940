"""leads: idempotency keys of bulk creates (imports), unique per office

Revision ID: leads_0005
Revises: leads_0004
Create Date: 2026-12-06
"""

from alembic import op

from crm_pipeline.tables import add_import_keys, drop_import_keys

revision = "leads_0005"
down_revision = "leads_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_import_keys(op, "leads")


def downgrade() -> None:
    drop_import_keys(op, "leads")

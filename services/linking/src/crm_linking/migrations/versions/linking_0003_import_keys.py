"""linking: idempotency keys of bulk creates (imports of companies and contacts), per office

Revision ID: linking_0003
Revises: linking_0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import crm_kit.db

revision = "linking_0003"
down_revision = "linking_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_keys",
        sa.Column("entity", sa.String(length=20), nullable=False),
        sa.Column("office_id", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", crm_kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity", "office_id", "key", name=op.f("pk_import_keys")),
    )


def downgrade() -> None:
    op.drop_table("import_keys")

"""linking: read model of leads and opportunities

Revision ID: linking_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from crm_kit.db import UTCDateTime

revision = "linking_0001"
down_revision = None
branch_labels = ("linking",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_views",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("owner_id", sa.String(200), nullable=False),
        sa.Column("office_id", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("record_views")

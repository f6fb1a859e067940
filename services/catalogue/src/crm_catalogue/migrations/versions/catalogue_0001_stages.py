"""catalogue: stages

Revision ID: catalogue_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from crm_kit.db import UTCDateTime

revision = "catalogue_0001"
down_revision = None
branch_labels = ("catalogue",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("code", sa.String(100), nullable=False),
        sa.Column("names", sa.JSON, nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("kind", "code", name="uq_stages_kind_code"),
    )


def downgrade() -> None:
    op.drop_table("stages")

"""triggers: trigger rules

Revision ID: triggers_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from crm_kit.db import UTCDateTime

revision = "triggers_0001"
down_revision = None
branch_labels = ("triggers",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_rules",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trigger_rules")

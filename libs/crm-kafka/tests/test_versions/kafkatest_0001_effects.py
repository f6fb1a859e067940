"""kafka kit tests: the effects table a test consumer writes

Revision ID: kafkatest_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "kafkatest_0001"
down_revision = None
branch_labels = ("kafkatest",)
depends_on = None


def upgrade() -> None:
    # No unique constraint on purpose: a duplicated effect must be visible, not refused.
    op.create_table(
        "effects",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("marker", sa.String(100), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("effects")

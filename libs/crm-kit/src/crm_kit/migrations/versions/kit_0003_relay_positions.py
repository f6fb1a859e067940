"""kit: the relay's positions on Kafka (read-your-writes)

Revision ID: kit_0003
Revises: kit_0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "kit_0003"
down_revision = "kit_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_positions",
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name="pk_relay_positions"),
    )


def downgrade() -> None:
    op.drop_table("relay_positions")

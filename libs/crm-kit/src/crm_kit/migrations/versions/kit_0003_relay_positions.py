"""kit: the relay's positions on Kafka (read-your-writes)

Created 2026-12-06.
"""

import sqlalchemy as sa

from crm_kit.migration_helpers import columns, new_tables, strings, table

revision = "kit_0003"
down_revision = "kit_0002"
upgrade, downgrade = new_tables(
    table("relay_positions", *strings(topic=200), *columns(sa.Integer(), "partition"),
          *columns(sa.BigInteger(), "next_offset"), key=("topic", "partition")),
)

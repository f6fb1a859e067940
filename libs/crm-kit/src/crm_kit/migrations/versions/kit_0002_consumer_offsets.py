"""kit: consumer offsets kept with the effects

Created 2026-11-23.
"""

import sqlalchemy as sa

from crm_kit.migration_helpers import columns, new_tables, strings, table

revision = "kit_0002"
down_revision = "kit_0001"
upgrade, downgrade = new_tables(
    table("consumer_offsets", *strings(consumer=200, topic=200), *columns(sa.Integer(), "partition"),
          *columns(sa.BigInteger(), "next_offset"), key=("consumer", "topic", "partition")),
)

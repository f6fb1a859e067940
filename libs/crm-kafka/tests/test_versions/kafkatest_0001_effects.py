"""kafka kit tests: the effects table a test consumer writes

Created 2026-11-23.
"""

import sqlalchemy as sa

from crm_kit.migration_helpers import columns, new_tables, strings, table

revision = "kafkatest_0001"
down_revision = None
branch_labels = ("kafkatest",)
# No unique constraint on purpose: a duplicated effect must be visible, not refused.
upgrade, downgrade = new_tables(
    table("effects", sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
          *strings(event_id=36, marker=100), *columns(sa.Integer(), "sequence"), key=()),
)

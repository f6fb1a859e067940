"""sample: notes

Created 2026-11-23.
"""

import sqlalchemy as sa

from crm_kit.migration_helpers import UTC, columns, new_tables, table

revision = "sample_0001"
down_revision = None
branch_labels = ("sample",)
upgrade, downgrade = new_tables(
    table("notes", sa.Column("id", sa.String(36), primary_key=True),
          sa.Column("title", sa.String(200), nullable=False, unique=True),
          *columns(sa.Integer(), "version"), *columns(UTC, "created_at"), key=()),
)

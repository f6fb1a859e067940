"""kit: outbox, inbox and idempotency keys

Created 2026-11-23.
"""

import sqlalchemy as sa
from alembic.operations import Operations

from crm_kit.migration_helpers import ID, REF, UTC, columns, create_tables, drop_tables, migration, strings, table

revision = "kit_0001"
down_revision = None
branch_labels = ("kit",)

TABLES = (
    table("outbox",
          sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
          *strings(event_id=ID, topic=200, key=200), *columns(sa.LargeBinary(), "payload"),
          *columns(sa.JSON(), "headers"), *columns(UTC, "created_at"), *columns(UTC, "sent_at", null=True),
          unique={"uq_outbox_event_id": ("event_id",)}),
    table("inbox", *strings(consumer=200, event_id=ID, topic=200), *columns(UTC, "processed_at"),
          key=("consumer", "event_id")),
    table("idempotency_keys", *strings(principal=REF, key=200, method=10, path=2000, request_hash=64),
          *columns(sa.Integer(), "status"), *columns(sa.JSON(), "headers"), *columns(sa.Text(), "body"),
          *columns(UTC, "created_at"), key=("principal", "key"), indexes=["created_at"]),
)


def _create(op: Operations) -> None:
    create_tables(op, *TABLES)
    # The relay reads the unsent rows in id order.
    op.create_index("ix_outbox_unsent", "outbox", ["id"],
                    postgresql_where=sa.text("sent_at IS NULL"), sqlite_where=sa.text("sent_at IS NULL"))


upgrade, downgrade = migration(_create, lambda op: drop_tables(op, *TABLES))

"""webhooks: room for a link's id (``<file id>:<record id>``) in the log, the states and the queue

Created 2026-12-07.

A link event (``contact.linked``, ``job_order.unlinked``, ...) is about a link whose id is its
file's and its record's (73 characters): ``events.entity_id`` and ``entity_states.id`` were 36,
and every link event failed the consumer until it was dead-lettered. They become 100, and
``deliveries.ordering_key`` (``<entity>:<id>``) 150. Downgrading removes what does not fit back.
"""

import sqlalchemy as sa
from alembic import op

revision = "webhooks_0002"
down_revision = "webhooks_0001"

WIDENED = (("events", "entity_id", 36, 100), ("entity_states", "id", 36, 100),
           ("deliveries", "ordering_key", 100, 150))


def upgrade() -> None:
    for table, column, old, new in WIDENED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=old), type_=sa.String(length=new),
                                  existing_nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE length(ordering_key) > 100 OR event_seq IN "
               "(SELECT seq FROM events WHERE length(entity_id) > 36)")
    op.execute("DELETE FROM events WHERE length(entity_id) > 36")
    op.execute("DELETE FROM entity_states WHERE length(id) > 36")
    for table, column, old, new in WIDENED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=new), type_=sa.String(length=old),
                                  existing_nullable=False)

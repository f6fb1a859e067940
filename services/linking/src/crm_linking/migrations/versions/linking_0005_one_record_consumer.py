"""linking: one consumer group of the record topics (``records`` takes over ``reactions``)

The worker read the record topics twice, in ``linking.records`` (the read model) and
``linking.reactions`` (timelines, deletions, conversions); now ``linking.records`` does both.
It starts each partition at the lower of the two positions, and with an empty inbox, so every
event that either had not yet applied is applied again by both halves: each is idempotent in
itself (versions guard the read model; a timeline entry, a carried link, a conversion are
written once), so an event both had applied changes nothing. ``reactions``' rows go: an offset
row of a consumer that no longer runs would hold every read that waits for the topic.

Downgrade: ``reactions`` starts where ``records`` is (with an empty inbox: both did what came before).

Created 2026-12-07.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.operations import Operations

from crm_kit.migration_helpers import migration

revision = "linking_0005"
down_revision = "linking_0004"
depends_on = ("kit_0002",)  # consumer_offsets (and the inbox, kit_0001)

MERGED, MERGED_FROM = "linking.records", "linking.reactions"
OFFSETS = sa.table("consumer_offsets", sa.column("consumer", sa.String), sa.column("topic", sa.String),
                   sa.column("partition", sa.Integer), sa.column("next_offset", sa.BigInteger))
INBOX = sa.table("inbox", sa.column("consumer", sa.String), sa.column("event_id", sa.String))


def _positions(op: Operations, consumer: str) -> dict[tuple[str, int], int]:
    rows = op.get_bind().execute(sa.select(OFFSETS.c.topic, OFFSETS.c.partition, OFFSETS.c.next_offset)
                                 .where(OFFSETS.c.consumer == consumer))
    return {(row.topic, row.partition): row.next_offset for row in rows}


def _restart(op: Operations, consumer: str, positions: dict[tuple[str, int], int]) -> None:
    """``consumer`` starts at ``positions`` (a partition without one: at the beginning), inbox empty."""
    bind = op.get_bind()
    bind.execute(sa.delete(OFFSETS).where(OFFSETS.c.consumer == consumer))
    bind.execute(sa.delete(INBOX).where(INBOX.c.consumer == consumer))
    if positions:
        bind.execute(sa.insert(OFFSETS), [{"consumer": consumer, "topic": topic, "partition": partition,
                                           "next_offset": offset} for (topic, partition), offset in positions.items()])


def _upgrade(op: Operations) -> None:
    records, reactions = _positions(op, MERGED), _positions(op, MERGED_FROM)
    # A partition one of them has no position for starts at the beginning for both.
    lower = {key: min(offset, reactions[key]) for key, offset in records.items() if key in reactions}
    _restart(op, MERGED, lower)
    _restart(op, MERGED_FROM, {})


def _downgrade(op: Operations) -> None:
    _restart(op, MERGED_FROM, _positions(op, MERGED))


upgrade, downgrade = migration(_upgrade, _downgrade)

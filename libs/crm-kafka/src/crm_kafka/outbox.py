"""The transactional outbox: events are rows written in the state change's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_events.envelope import encode, headers_for
from crm_kit import consistency, correlation
from crm_kit.db import is_postgres, new_metadata, utcnow

NOTIFY_CHANNEL = "crm_outbox"
OUTBOX: Table = new_metadata().tables["outbox"]


def record_event(session: Session, topic: str, envelope: Envelope, key: str | None = None) -> None:
    """Add ``envelope`` to the outbox in ``session``'s transaction (it commits with the change).

    The Kafka key is the aggregate id unless given, so one record's events stay in order.
    On PostgreSQL the commit also wakes the relay (NOTIFY is delivered only on commit).
    """
    if not envelope.correlation_id and correlation.get():
        envelope.correlation_id = correlation.get() or ""
    headers = [[name, value.decode()] for name, value in headers_for(envelope)]
    result: Any = session.execute(
        OUTBOX.insert().values(
            event_id=envelope.event_id,
            topic=topic,
            key=key or envelope.aggregate_id,
            payload=encode(envelope),
            headers=headers,
            created_at=utcnow(),
        )
    )
    # The request's answer tells the gateway this id: its consistency token covers the write.
    consistency.note_written(int(result.inserted_primary_key[0]))
    if is_postgres(session):
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


def record_events(session: Session, topic: str, envelopes: Sequence[Envelope]) -> None:
    """``record_event`` for many envelopes in one statement (bulk creates): the same rows, in
    this order, keyed by their aggregate ids."""
    record_rows(session, [(topic, envelope, None) for envelope in envelopes])


# Every change's commit runs these: built once (a statement built per call costs CPU to build and key).
_INSERT_ROWS = insert(OUTBOX).returning(OUTBOX.c.id, sort_by_parameter_order=True)
_NOTIFY = text("SELECT pg_notify(:channel, '')")


def record_rows(session: Session, events: Sequence[tuple[str, Envelope, str | None]]) -> None:
    """Outbox rows for ``(topic, envelope, key)`` triples in one statement, in this order; a key of
    None is the aggregate id. The unit of work's commit calls it."""
    if not events:
        return
    now = utcnow()
    rows = []
    for topic, envelope, key in events:
        if not envelope.correlation_id and correlation.get():
            envelope.correlation_id = correlation.get() or ""
        rows.append({"event_id": envelope.event_id, "topic": topic, "key": key or envelope.aggregate_id,
                     "payload": encode(envelope),
                     "headers": [[name, value.decode()] for name, value in headers_for(envelope)],
                     "created_at": now})
    ids = session.execute(_INSERT_ROWS, rows).scalars().all()
    consistency.note_written(max(int(i) for i in ids))
    if is_postgres(session):
        session.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL})

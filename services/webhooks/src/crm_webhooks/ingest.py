"""Taking events in: the ``events`` consumer's handler (record and linking topics).

Each platform event becomes one ``events`` row (the feed) with its ``changes`` against the
thing's previous state, and one ``deliveries`` row per subscription it is for - all in the
consumer's transaction with its inbox row, so an event is queued exactly once per endpoint
whatever happens to the worker. A subscription gets an event when it names its type (or ``*``),
may see its office, and its filter (if any) holds on the record as the event left it.

Inactive and disabled subscriptions keep collecting their deliveries: when they are enabled
again they receive that backlog, in order. Deleting a subscription drops its queue.

On PostgreSQL the batch takes a transaction-level advisory lock first, so that two workers (two
partitions' owners) never interleave their ``events`` rows: the feed's cursor (``seq``) then
only grows in commit order, and a reader that saw seq N never misses a row below it.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_kit.db import insert_on_conflict, is_postgres, utcnow
from crm_webhooks import filters
from crm_webhooks.events import ALL, RECORD_KINDS, PublicEvent, changes_between, filter_row, public_event
from crm_webhooks.tables import deliveries, entity_states, events, subscriptions

# Set when a transaction queued deliveries: the dispatcher (same process) looks at once.
QUEUED = threading.Event()
_LOCK_KEY = 0x5EB400C5  # the advisory lock that orders the events rows of concurrent workers
_SUBSCRIPTIONS = "crm_webhooks.subscriptions"


def _subscriptions(session: Session) -> list[Any]:
    """Every subscription, read once per transaction (a consumer's batch)."""
    if _SUBSCRIPTIONS not in session.info:
        if is_postgres(session):
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        session.info[_SUBSCRIPTIONS] = list(session.execute(
            select(subscriptions.c.id, subscriptions.c.event_types, subscriptions.c.filter,
                   subscriptions.c.office_id, subscriptions.c.all_offices).order_by(subscriptions.c.id)).all())
        sa_event.listen(session, "after_commit", lambda _s: QUEUED.set(), once=True)
    return session.info[_SUBSCRIPTIONS]  # type: ignore[no-any-return]


def _office(session: Session, event: PublicEvent, before: Any) -> str | None:
    """Who may see the event: the record's office; a link's or activity's record's office ("" when
    that record is not known here: only callers who see every office); NULL for shared files."""
    if event.entity in RECORD_KINDS:
        if event.record is not None:
            return event.record.office_id
        return before.office_id if before is not None else ""
    if event.record_ref is not None:
        kind, record_id = event.record_ref
        office = session.execute(select(entity_states.c.office_id).where(
            entity_states.c.entity == kind, entity_states.c.id == record_id)).scalar()
        return office if office is not None else ""
    if event.entity == "activity":
        return event.data.get("office_id") or None
    return None


def visible_to(office_id: str | None, sub_office: str, all_offices: bool) -> bool:
    return all_offices or office_id is None or office_id == sub_office


def wants(sub: Any, event_type: str) -> bool:
    return ALL in sub.event_types or event_type in sub.event_types


def handle(session: Session, envelope: Envelope) -> None:
    """The ``events`` consumer's handler."""
    event = public_event(envelope)
    if event is None:
        return
    subs = _subscriptions(session)
    before = session.execute(select(entity_states).where(entity_states.c.entity == event.entity,
                                                         entity_states.c.id == event.entity_id)).first()
    if event.deleted and before is not None and event.entity in RECORD_KINDS:
        event.data = {**before.data, "deleted": True}
    office = _office(session, event, before)
    newer = before is None or before.version < event.version or event.deleted
    changes = changes_between(before.data if before is not None else None, event.data) if newer else {}
    changes.update(event.explicit_changes)
    if newer:
        stmt = insert_on_conflict(session, entity_states).values(entity=event.entity, id=event.entity_id,
                                                                 version=event.version, office_id=office,
                                                                 data=event.data)
        session.execute(stmt.on_conflict_do_update(index_elements=["entity", "id"], set_={
            "version": stmt.excluded.version, "office_id": stmt.excluded.office_id, "data": stmt.excluded.data}))
    row = {"event_id": event.event_id, "type": event.type, "entity": event.entity, "entity_id": event.entity_id,
           "office_id": office, "occurred_at": event.occurred_at, "body": event.body(changes)}
    if event.record is not None:
        row.update(filter_row(event.record))
    seq = session.execute(insert_on_conflict(session, events).values(**row).on_conflict_do_nothing()
                          .returning(events.c.seq)).scalar()
    if seq is None:  # this event is in the log already (the inbox makes this rare)
        return
    enqueue(session, subs, event.type, event.entity, seq, event.event_id, event.ordering_key, office)


def enqueue(session: Session, subs: list[Any], event_type: str, entity: str, seq: int, event_id: str,
            ordering_key: str, office: str | None) -> int:
    """Queue the event for each of ``subs`` it is for; how many."""
    now, queued = utcnow(), 0
    for sub in subs:
        if not wants(sub, event_type) or not visible_to(office, sub.office_id, sub.all_offices):
            continue
        condition = filters.applies(sub.filter, entity) if entity in RECORD_KINDS else None
        if condition is not None and session.execute(
                select(events.c.seq).where(events.c.seq == seq, condition)).first() is None:
            continue
        session.execute(deliveries.insert().values(
            subscription_id=sub.id, event_seq=seq, event_id=event_id, event_type=event_type,
            ordering_key=ordering_key, state="pending", attempts=0, next_attempt_at=now, created_at=now))
        queued += 1
    return queued

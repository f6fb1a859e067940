"""Taking events in: the ``events`` consumer's handler (record and linking topics).

Each platform event becomes one ``events`` row (the feed) with its ``changes`` against the
thing's previous state, and one ``deliveries`` row per subscription it is for - all in the
consumer's transaction with its inbox row, so an event is queued exactly once per endpoint
whatever happens to the worker. A subscription gets an event when it names its type (or ``*``),
may see its office, and its filter (if any) holds on the record as the event left it.

The handler only gathers a transaction's events; ``finish`` (which the consumer calls once per
transaction, before the inbox rows) writes them in a few statements whatever the batch's size:
one read of the states the batch needs, one multi-row insert each for the ``events``, the new
states and the deliveries, and one query per filtered subscription. (One event at a time, it was
some ten round trips per event, and the consumer fell minutes behind a busy platform.)

Inactive and disabled subscriptions keep collecting their deliveries: when they are enabled
again they receive that backlog, in order. Deleting a subscription drops its queue.

On PostgreSQL the batch takes a transaction-level advisory lock first, so that two workers (two
partitions' owners) never interleave their ``events`` rows: the feed's cursor (``seq``) then
only grows in commit order, and a reader that saw seq N never misses a row below it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, text, tuple_
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_kit.db import insert_on_conflict, is_postgres, utcnow
from crm_webhooks import filters
from crm_webhooks.events import ALL, RECORD_KINDS, PublicEvent, changes_between, filter_row, public_event
from crm_webhooks.tables import deliveries, entity_states, events, subscriptions

# Set when a transaction queued deliveries: the dispatcher (same process) looks at once.
QUEUED = threading.Event()
_LOCK_KEY = 0x5EB400C5  # the advisory lock that orders the events rows of concurrent workers
_PENDING = "crm_webhooks.pending"
_CHUNK = 1000  # ids per IN list
# The filter columns of ``events``: every row names them all (one multi-row insert), NULL when
# the event is not a record's.
_FILTER_COLUMNS = tuple(c.name for c in events.c if c.name not in
                        {"seq", "event_id", "type", "entity", "entity_id", "office_id", "occurred_at", "body"})


class State(NamedTuple):
    """A thing's latest state as this service knows it (an ``entity_states`` row)."""

    version: int
    office_id: str | None
    data: dict[str, Any]


class Queued(NamedTuple):
    """An ``events`` row as ``enqueue`` needs it."""

    seq: int
    type: str
    entity: str
    event_id: str
    ordering_key: str
    office_id: str | None


class Ingest:
    """The ``events`` consumer's handler: gathers the transaction's public events; ``finish``
    takes them in."""

    def __call__(self, session: Session, envelope: Envelope) -> None:
        event = public_event(envelope)
        if event is not None:
            session.info.setdefault(_PENDING, []).append(event)

    def finish(self, session: Session) -> None:
        pending = session.info.pop(_PENDING, None)
        if pending:
            take_in(session, pending)


handle = Ingest()


def visible_to(office_id: str | None, sub_office: str, all_offices: bool) -> bool:
    return all_offices or office_id is None or office_id == sub_office


def wants(sub: Any, event_type: str) -> bool:
    return ALL in sub.event_types or event_type in sub.event_types


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    return (items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK))


def _office(states: dict[tuple[str, str], State], event: PublicEvent, before: State | None) -> str | None:
    """Who may see the event: the record's office; a link's or activity's record's office ("" when
    that record is not known here: only callers who see every office); NULL for shared files."""
    if event.entity in RECORD_KINDS:
        if event.record is not None:
            return event.record.office_id
        return before.office_id if before is not None else ""
    if event.record_ref is not None:
        known = states.get(event.record_ref)
        return known.office_id if known is not None and known.office_id is not None else ""
    if event.entity == "activity":
        return event.data.get("office_id") or None
    return None


def _states(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], State]:
    found: dict[tuple[str, str], State] = {}
    for chunk in _chunks(sorted(keys)):
        for row in session.execute(select(entity_states).where(
                tuple_(entity_states.c.entity, entity_states.c.id).in_(chunk))):
            found[(row.entity, row.id)] = State(row.version, row.office_id, row.data)
    return found


# Run for every batch (every event, at a low rate): built once, with parameters.
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_SUBSCRIPTIONS = select(subscriptions.c.id, subscriptions.c.event_types, subscriptions.c.filter,
                        subscriptions.c.office_id, subscriptions.c.all_offices).order_by(subscriptions.c.id)
_LOGGED = select(events.c.event_id).where(events.c.event_id.in_(bindparam("event_ids", expanding=True)))
_LOG = events.insert().returning(events.c.seq, sort_by_parameter_order=True)
_STATE_UPSERTS: dict[str, Any] = {}


def _state_upsert(session: Session) -> Any:
    """Entity states, newest first seen or replaced (one statement per dialect)."""
    dialect = session.get_bind().dialect.name
    if dialect not in _STATE_UPSERTS:
        upsert = insert_on_conflict(session, entity_states)
        _STATE_UPSERTS[dialect] = upsert.on_conflict_do_update(index_elements=["entity", "id"], set_={
            "version": upsert.excluded.version, "office_id": upsert.excluded.office_id,
            "data": upsert.excluded.data}).returning(entity_states.c.id)
    return _STATE_UPSERTS[dialect]


def take_in(session: Session, pending: list[PublicEvent]) -> int:
    """Write ``pending`` (in their order) to the log and queue them; how many deliveries."""
    if is_postgres(session):
        session.execute(_LOCK, {"key": _LOCK_KEY})
    subs = list(session.execute(_SUBSCRIPTIONS).all())
    ids = [e.event_id for e in pending]
    logged: set[str] = set()  # in the log already (the inbox makes this rare: a restored backup)
    for chunk in _chunks(ids):
        logged.update(session.execute(_LOGGED, {"event_ids": list(chunk)}).scalars())
    states = _states(session, {(e.entity, e.entity_id) for e in pending}
                     | {e.record_ref for e in pending if e.record_ref is not None})
    changed: dict[tuple[str, str], State] = {}
    rows: list[dict[str, Any]] = []
    taken: list[tuple[PublicEvent, str | None]] = []
    for event in pending:
        if event.event_id in logged:
            continue
        logged.add(event.event_id)
        key = (event.entity, event.entity_id)
        before = states.get(key)
        if event.deleted and before is not None and event.entity in RECORD_KINDS:
            event.data = {**before.data, "deleted": True}
        office = _office(states, event, before)
        newer = before is None or before.version < event.version or event.deleted
        changes = changes_between(before.data if before is not None else None, event.data) if newer else {}
        changes.update(event.explicit_changes)
        if newer:
            states[key] = changed[key] = State(event.version, office, event.data)
        row = dict.fromkeys(_FILTER_COLUMNS)
        if event.record is not None:
            row.update(filter_row(event.record))
        row.update(event_id=event.event_id, type=event.type, entity=event.entity, entity_id=event.entity_id,
                   office_id=office, occurred_at=event.occurred_at, body=event.body(changes))
        rows.append(row)
        taken.append((event, office))
    if changed:
        session.execute(_state_upsert(session), [
            {"entity": k[0], "id": k[1], "version": s.version, "office_id": s.office_id, "data": s.data}
            for k, s in changed.items()])
    if not rows:
        return 0
    seqs = session.execute(_LOG, rows).scalars().all()
    return enqueue(session, subs, [Queued(seq, e.type, e.entity, e.event_id, e.ordering_key, office)
                                   for seq, (e, office) in zip(seqs, taken, strict=True)])


def _refused(session: Session, text_: str | None, queued: Sequence[Queued]) -> set[int]:
    """The seqs of the record events among ``queued`` that the filter ``text_`` (if any) does not hold on."""
    refused: set[int] = set()
    for kind in RECORD_KINDS:
        seqs = [q.seq for q in queued if q.entity == kind]
        condition = filters.applies(text_, kind) if seqs else None
        if condition is None:
            continue
        refused.update(seqs)
        for chunk in _chunks(seqs):
            refused.difference_update(session.execute(
                select(events.c.seq).where(events.c.seq.in_(chunk), condition)).scalars())
    return refused


def enqueue(session: Session, subs: Sequence[Any], queued: Sequence[Queued]) -> int:
    """Queue each of ``queued`` (in seq order) for each of ``subs`` it is for; how many, in one insert."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for sub in subs:
        mine = [q for q in queued
                if wants(sub, q.type) and visible_to(q.office_id, sub.office_id, sub.all_offices)]
        refused = _refused(session, sub.filter, mine)
        mine = [q for q in mine if q.seq not in refused]
        rows += [{"subscription_id": sub.id, "event_seq": q.seq, "event_id": q.event_id, "event_type": q.type,
                  "ordering_key": q.ordering_key, "state": "pending", "attempts": 0, "next_attempt_at": now,
                  "created_at": now} for q in mine]
    if rows:
        # Ids in the rows' order (each endpoint's in seq order): one record's deliveries go out so.
        session.execute(deliveries.insert().returning(deliveries.c.id, sort_by_parameter_order=True), rows)
        sa_event.listen(session, "after_commit", lambda _s: QUEUED.set(), once=True)
    return len(rows)

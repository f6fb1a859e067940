"""What linking writes besides its tables - its events (``LINKING``) and the timeline - and the
one place it maps between its rows and protobuf: a row becomes a ``LinkingChange`` in an
envelope (``publish``), a caller becomes an ``Actor`` (``actor_of``), and a record event says
who made its change and when (``actor_id``, ``occurred_at``).

Both are written in the transaction of the change they describe, so they can never disagree
with it: an event goes to the transaction's unit of work, which writes it to the outbox when
the transaction commits (and drops it with a savepoint that rolls back); a request's are written
just before its answer, which names the last one (the kit's web edge does that).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, exists, insert, select
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.linking_pb2 import LinkingChange
from crm_events.envelope import new_envelope
from crm_events.topics import LINKING
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.db import utcnow
from crm_kit.identity import Identity
from crm_linking.tables import timeline

SYSTEM = "system"


def _plain(value: Any) -> Any:
    """A value a protobuf Struct can hold."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def actor_of(identity: Identity | None) -> Actor:
    if identity is None:
        return Actor(kind=SYSTEM)
    return Actor(user_id=identity.user_id, name=identity.name, office_id=identity.office_id, kind="user")


def actor_id(envelope: Envelope) -> str:
    """Who made an event's change: its user, or ``system``."""
    return envelope.actor.user_id or SYSTEM


def occurred_at(envelope: Envelope) -> dt.datetime:
    """When an event's change happened (now, for an event without the time)."""
    if envelope.HasField("occurred_at"):
        return envelope.occurred_at.ToDatetime(tzinfo=dt.UTC)
    return utcnow()


def publish(session: Session, event_type: str, entity: str, entity_id: str, data: Mapping[str, Any], *,
            version: int = 1, record_kind: str = "", record_id: str = "", deleted: bool = False,
            identity: Identity | None = None, causation_id: str | None = None) -> None:
    """A ``linking.*`` event for a file or a link, published when the transaction commits."""
    change = LinkingChange(entity=entity, id=entity_id, record_kind=record_kind, record_id=record_id,
                           deleted=deleted, version=version)
    change.data.update({k: _plain(v) for k, v in data.items()})
    UnitOfWork.of(session).add(LINKING, new_envelope(event_type, entity, entity_id, version, change,
                                                     actor=actor_of(identity), producer="linking",
                                                     causation_id=causation_id))


def note(session: Session, record_kind: str, record_id: str, kind: str, data: Mapping[str, Any], *,
         at: dt.datetime | None = None, event_id: str | None = None) -> None:
    """Add an entry to a record's timeline (``kind``: stage_changed, contact_linked, ...)."""
    session.execute(insert(timeline).values(record_kind=record_kind, record_id=record_id, at=at or utcnow(),
                                            type=kind, data={k: _plain(v) for k, v in data.items()},
                                            event_id=event_id))


def _note_once_statement() -> Any:
    """``INSERT INTO timeline ... SELECT <the entry> WHERE NOT EXISTS (<its event's entry of that type>)``,
    with parameters: built once (building it per event cost more CPU than running it). The entry and
    the look each have parameters of their own: PostgreSQL types a parameter once, and it would be
    text in the select list but varchar in the comparison."""
    t = timeline
    columns = ["record_kind", "record_id", "at", "type", "data", "event_id"]
    done = exists().where(*(t.c[name] == bindparam(f"seen_{name}", type_=t.c[name].type)
                            for name in ("record_kind", "record_id", "type", "event_id")))
    entry = select(*(bindparam(name, type_=t.c[name].type) for name in columns)).where(~done)
    return insert(t).from_select(columns, entry)


_NOTE_ONCE = _note_once_statement()


def note_once(session: Session, record_kind: str, record_id: str, kind: str, data: Mapping[str, Any], *,
              at: dt.datetime, event_id: str) -> None:
    """``note``, unless event ``event_id`` left a ``kind`` entry on the record already (a redelivery):
    one statement instead of a look and an insert."""
    session.execute(_NOTE_ONCE, {
        "record_kind": record_kind, "record_id": record_id, "at": at, "type": kind,
        "data": {k: _plain(v) for k, v in data.items()}, "event_id": event_id,
        "seen_record_kind": record_kind, "seen_record_id": record_id, "seen_type": kind, "seen_event_id": event_id})

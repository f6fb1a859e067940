"""What linking writes besides its tables: its events (crm.linking.v1) and the timeline.

Both are written in the transaction of the change they describe, so they can never
disagree with it. ``publish`` is the one place a row becomes a LinkingChange.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Actor
from crm.events.v1.linking_pb2 import LinkingChange
from crm_events.envelope import new_envelope
from crm_kafka.outbox import record_event
from crm_kit.db import utcnow
from crm_kit.web import Identity
from crm_linking.tables import timeline

TOPIC = "crm.linking.v1"


def _plain(value: Any) -> Any:
    """A value a protobuf Struct can hold."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def actor_of(identity: Identity | None) -> Actor:
    if identity is None:
        return Actor(kind="system")
    return Actor(user_id=identity.user_id, name=identity.name, office_id=identity.office_id, kind="user")


def publish(session: Session, event_type: str, entity: str, entity_id: str, data: Mapping[str, Any], *,
            version: int = 1, record_kind: str = "", record_id: str = "", deleted: bool = False,
            identity: Identity | None = None, causation_id: str | None = None) -> None:
    """Write a ``linking.*`` event for a file or a link to the outbox."""
    change = LinkingChange(entity=entity, id=entity_id, record_kind=record_kind, record_id=record_id,
                           deleted=deleted, version=version)
    change.data.update({k: _plain(v) for k, v in data.items()})
    record_event(session, TOPIC, new_envelope(event_type, entity, entity_id, version, change,
                                              actor=actor_of(identity), producer="linking",
                                              causation_id=causation_id))


def note(session: Session, record_kind: str, record_id: str, kind: str, data: Mapping[str, Any], *,
         at: dt.datetime | None = None, event_id: str | None = None) -> None:
    """Add an entry to a record's timeline (``kind``: stage_changed, contact_linked, ...)."""
    session.execute(insert(timeline).values(record_kind=record_kind, record_id=record_id, at=at or utcnow(),
                                            type=kind, data={k: _plain(v) for k, v in data.items()},
                                            event_id=event_id))

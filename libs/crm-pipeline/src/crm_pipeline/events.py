"""The one place where a pipeline record becomes an event (ORM rows never reach Kafka)."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Actor
from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_events.envelope import new_envelope
from crm_kafka.outbox import record_event
from crm_kit.web import Identity
from crm_pipeline.kind import RecordKind


def _ts(value: Any) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def snapshot(kind: RecordKind, row: Any) -> PipelineRecord:
    """The record's state after a change (event-carried state transfer)."""
    return PipelineRecord(
        id=row.id, kind=kind.kind, title=row.title, description=row.description, owner_id=row.owner_id,
        office_id=row.office_id, version=row.version, created_at=_ts(row.created_at), created_by=row.created_by,
        modified_at=_ts(row.modified_at), modified_by=row.modified_by,
    )


def actor_of(identity: Identity) -> Actor:
    return Actor(user_id=identity.user_id, name=identity.name, office_id=identity.office_id, kind="user")


def emit(session: Session, kind: RecordKind, what: str, row: Any, identity: Identity) -> None:
    """Write ``<kind>.<what>`` for ``row`` to the outbox, in the change's transaction."""
    payload: Any = RecordDeleted(id=row.id, kind=kind.kind) if what == "deleted" else snapshot(kind, row)
    envelope = new_envelope(kind.event_type(what), kind.kind, row.id, row.version, payload,
                            actor=actor_of(identity))
    record_event(session, kind.topic, envelope)

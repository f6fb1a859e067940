"""Which stage each lead and opportunity is in, learned from their events.

The catalogue never asks the record services: it keeps ``stage_usage`` from the lead and
opportunity events (``RECORD_TOPICS``, the worker's ``usage`` consumer), so a stage
that records use can refuse deletion. Events of one record arrive in order (key = record
id); versions guard against replays anyway.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_catalogue.tables import stage_usage
from crm_events.envelope import record_state
from crm_events.topics import RECORD_TOPICS
from crm_kafka.worker import ConsumerSpec

TOPICS = list(RECORD_TOPICS)


def apply_record_event(session: Session, envelope: Envelope) -> None:
    """Record the stage of the record in ``envelope`` (or forget a deleted record).

    Decided by the payload, not the event type: every record event carries the record after
    the change (created, updated, and later stage_changed, converted, ...), so types added
    later need no change here.
    """
    if envelope.WhichOneof("payload") == "record_deleted":
        _forget(session, envelope.record_deleted)
        return
    record = record_state(envelope)
    if record is not None:
        _remember(session, record)


def _remember(session: Session, record: PipelineRecord) -> None:
    values = {"kind": record.kind, "stage_id": record.stage_id or None, "version": record.version}
    current = session.execute(select(stage_usage.c.version).where(stage_usage.c.record_id == record.id)).scalar()
    if current is None:
        session.execute(stage_usage.insert().values(record_id=record.id, **values))
    elif record.version > current:  # an older or repeated version changes nothing
        session.execute(update(stage_usage).where(stage_usage.c.record_id == record.id).values(**values))


def _forget(session: Session, record: RecordDeleted) -> None:
    session.execute(delete(stage_usage).where(stage_usage.c.record_id == record.id))


def records_in_stage(session: Session, stage_id: str) -> int:
    """How many records are in ``stage_id``, as far as their events have told."""
    return session.execute(select(func.count()).select_from(stage_usage)
                           .where(stage_usage.c.stage_id == stage_id)).scalar_one()


def usage_consumer() -> ConsumerSpec:
    """The worker's consumer of record events (group ``catalogue.usage``)."""
    return ConsumerSpec("usage", TOPICS, apply_record_event)

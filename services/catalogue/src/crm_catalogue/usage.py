"""Which stage each lead and opportunity is in, learned from their events.

The catalogue never asks the record services: it keeps ``stage_usage`` from the lead and
opportunity events (``RECORD_TOPICS``, the worker's ``usage`` consumer), so a stage that
records use can refuse deletion. The table is a record read model (``RecordView``): the
newest version of each record wins, a late or older event changes nothing, and a deleted
record is forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord
from crm_catalogue.tables import stage_usage
from crm_kafka.record_view import RecordView
from crm_kafka.worker import ConsumerSpec


def _usage(record: PipelineRecord, _envelope: Envelope) -> Mapping[str, Any]:
    return {"kind": record.kind, "stage_id": record.stage_id or None}


# Any record event carries the record after the change (created, updated, stage_changed,
# converted, ...), so event types added later need no change here.
STAGE_USAGE = RecordView(stage_usage, _usage)


def records_in_stage(session: Session, stage_id: str) -> int:
    """How many records are in ``stage_id``, as far as their events have told."""
    return session.execute(select(func.count()).select_from(stage_usage)
                           .where(stage_usage.c.stage_id == stage_id)).scalar_one()


def usage_consumer() -> ConsumerSpec:
    """The worker's consumer of record events (group ``catalogue.usage``)."""
    return STAGE_USAGE.consumer("usage")

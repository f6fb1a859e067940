"""This service's view of every lead and opportunity (``record_states``): what conditions are
checked against and what time-based triggers count from.

It is the kit's record read model (``crm_kafka.record_view``) with tombstones: the newest
version of each record by id, and a deleted record keeps its row (``deleted`` true), so a late
event cannot bring it back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord
from crm_kafka.record_view import RecordView
from crm_kit.db import utcnow
from crm_triggers.tables import record_states

# The list-filter fields a condition can name (besides ``group_id``: membership).
STATE_FIELDS = ("stage_id", "stage_group_id", "owner_id", "office_id", "source_id", "priority_id", "category_id",
                "procedure_id", "company_id", "contact_id", "lead_id")


def timestamp(value: Any) -> dt.datetime | None:
    """A protobuf Timestamp as an aware datetime (None when unset)."""
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return None
    result: dt.datetime = value.ToDatetime(tzinfo=dt.UTC)
    return result


def occurred_at(envelope: Envelope) -> dt.datetime:
    """When the event happened (now, should it not say)."""
    return timestamp(envelope.occurred_at) or utcnow()


def modified_at(record: PipelineRecord, envelope: Envelope) -> dt.datetime:
    """The record's own last modification (the event's time, should the record not say)."""
    return timestamp(record.modified_at) or occurred_at(envelope)


def kind_of(envelope: Envelope) -> str:
    """``lead`` or ``opportunity``: the first part of the event type."""
    return envelope.event_type.partition(".")[0]


def state_of(record: PipelineRecord) -> dict[str, Any]:
    """The fields conditions are checked against (empty strings are None)."""
    state: dict[str, Any] = {name: getattr(record, name) or None for name in STATE_FIELDS}
    state["group_ids"] = sorted(record.group_ids)
    state["converted"] = bool(record.converted_opportunity_id)
    return state


def _columns(record: PipelineRecord, envelope: Envelope) -> Mapping[str, Any]:
    return {"kind": kind_of(envelope), "state": state_of(record), "modified_at": modified_at(record, envelope)}


def _tombstone(envelope: Envelope) -> Mapping[str, Any]:
    # A record deleted before this service saw it: a row that only says so.
    return {"kind": kind_of(envelope), "state": {}, "modified_at": utcnow()}


RECORDS = RecordView(record_states, columns=_columns, tombstone=_tombstone)


def is_converted(session: Session, record_id: str) -> bool:
    """Whether the record is a converted lead (which stays in end stages)."""
    state = session.execute(select(record_states.c.state).where(record_states.c.id == record_id)).scalar()
    return bool((state or {}).get("converted"))

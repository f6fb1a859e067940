"""The webhooks service's one protobuf mapper: a platform event (an ``Envelope`` of the record or
linking topics) as the public event integrators receive - its type, what it is about, the
resource after the change, and the record's filter fields.

Public types (API.md, "Webhooks and the event feed"): ``lead.<what>`` and ``opportunity.<what>``
as the records services name them; ``<entity>.<what>`` for the linking service's
``linking.<entity>.<what>`` (files: company, contact, job_order, placement, activity; links:
``contact.linked``, ``job_order.unlinked``...). Commands and anything else are not public.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.json_format import MessageToDict

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord
from crm_events.envelope import record_state

RECORD_KINDS = ("lead", "opportunity")
RECORD_WHATS = ("created", "updated", "stage_changed", "stage_group_changed", "added_to_group",
                "removed_from_group", "converted", "deleted")
FILE_ENTITIES = ("company", "contact", "job_order", "placement", "activity")
FILE_WHATS = ("created", "updated", "deleted")
LINK_TYPES = ("contact.linked", "contact.unlinked", "contact.role_changed", "job_order.linked", "job_order.unlinked")
TEST_TYPE = "webhook.test"
TEST_ENTITY = "webhook"  # a test delivery's: in the log for its endpoint alone (not in the feed, not replayed)
EVENT_TYPES: tuple[str, ...] = (
    *(f"{kind}.{what}" for kind in RECORD_KINDS for what in RECORD_WHATS),
    *(f"{entity}.{what}" for entity in FILE_ENTITIES for what in FILE_WHATS),
    *LINK_TYPES,
)
ALL = "*"
# A record's fields that say nothing about the change itself: left out of ``changes``.
NOT_CHANGES = frozenset({"version", "modified_at", "modified_by"})
_RECORD_TEXT = ("title", "description", "owner_id", "office_id", "stage_id", "stage_group_id", "created_by",
                "modified_by", "company_id", "contact_id", "source_id", "priority_id", "category_id", "procedure_id",
                "currency", "expected_close_date")
_RECORD_TIMES = ("created_at", "modified_at", "stage_changed_at")
# The filter columns of ``events`` filled from a record (``filter_row``).
_FILTER_IDS = ("stage_id", "stage_group_id", "owner_id", "source_id", "priority_id", "category_id", "procedure_id",
               "company_id", "contact_id", "lead_id", "converted_opportunity_id", "currency", "title")


@dataclass
class PublicEvent:
    """One event as integrators see it, before its ``changes`` are known."""

    event_id: str
    type: str
    entity: str  # lead, opportunity, company, ...
    entity_id: str
    version: int
    occurred_at: dt.datetime
    data: dict[str, Any]
    deleted: bool = False
    record: PipelineRecord | None = None  # a lead's or opportunity's state after the change
    record_ref: tuple[str, str] | None = None  # a link's or activity's record: (kind, id)
    explicit_changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ordering_key(self) -> str:
        return f"{self.entity}:{self.entity_id}"

    def body(self, changes: Mapping[str, Any]) -> str:
        """The JSON that is delivered: ``{"type", "timestamp", "data"}``, ``data`` with ``changes``."""
        return json.dumps({"type": self.type, "timestamp": rfc3339(self.occurred_at),
                           "data": {**self.data, "changes": dict(changes)}}, separators=(",", ":"), sort_keys=True)


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: Any) -> dt.datetime | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    result: dt.datetime = value.ToDatetime(tzinfo=dt.UTC)
    return result


def record_data(record: PipelineRecord) -> dict[str, Any]:
    """A lead or opportunity as the event shows it: the record's fields, empty ones as null."""
    data: dict[str, Any] = {"id": record.id, "kind": record.kind, "version": record.version}
    for name in _RECORD_TEXT:
        data[name] = getattr(record, name) or None
    for name in _RECORD_TIMES:
        when = _time(getattr(record, name))
        data[name] = rfc3339(when) if when else None
    data["attribute_ids"] = list(record.attribute_ids)
    data["group_ids"] = sorted(record.group_ids)
    if record.kind == "opportunity":
        data["amount"] = record.amount or None
        data["probability"] = record.probability if record.HasField("probability") else None
        data["lead_id"] = record.lead_id or None
    else:
        data.pop("currency"), data.pop("expected_close_date")
        data["converted_opportunity_id"] = record.converted_opportunity_id or None
    return data


def public_event(envelope: Envelope) -> PublicEvent | None:
    """The public event of ``envelope``, or None when it is none (commands, unknown types)."""
    head, _, rest = envelope.event_type.partition(".")
    occurred = _time(envelope.occurred_at) or dt.datetime.now(dt.UTC)
    if head in RECORD_KINDS and rest in RECORD_WHATS:
        event = PublicEvent(envelope.event_id, envelope.event_type, head, envelope.aggregate_id,
                            envelope.aggregate_version, occurred, {"id": envelope.aggregate_id, "kind": head})
        if rest == "deleted":
            event.deleted = True
            return event
        record = record_state(envelope)
        if record is None:
            return None
        event.record, event.data = record, record_data(record)
        if rest == "stage_changed":
            move = envelope.stage_changed
            event.explicit_changes["stage_id"] = {"from": move.from_stage_id or None, "to": move.to_stage_id or None}
        if rest == "converted":
            event.data["opportunity_id"] = envelope.lead_converted.opportunity.id or None
        return event
    if head == "linking" and envelope.WhichOneof("payload") == "linking_change":
        public = rest
        entity = public.partition(".")[0]
        if public not in LINK_TYPES and not (entity in FILE_ENTITIES and public.partition(".")[2] in FILE_WHATS):
            return None
        change = envelope.linking_change
        data = {"id": change.id, **MessageToDict(change.data)} if change.HasField("data") else {"id": change.id}
        ref = (change.record_kind, change.record_id) if change.record_kind in RECORD_KINDS and change.record_id \
            else None
        if ref:
            data.update(record_kind=ref[0], record_id=ref[1])
        entity_id = change.id or envelope.aggregate_id
        return PublicEvent(envelope.event_id, public, entity, entity_id, change.version or envelope.aggregate_version,
                           occurred, data, deleted=change.deleted or public.endswith(".deleted"), record_ref=ref)
    return None


def changes_between(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"from", "to"}}`` for each field that differs (none for a thing seen first)."""
    if before is None:
        return {}
    return {name: {"from": before.get(name), "to": after.get(name)}
            for name in sorted(set(before) | set(after))
            if name not in NOT_CHANGES and name != "changes" and before.get(name) != after.get(name)}


def filter_row(record: PipelineRecord) -> dict[str, Any]:
    """The filter columns of ``events`` for a record event."""
    row: dict[str, Any] = {name: getattr(record, name, "") or None for name in _FILTER_IDS}
    for name in _RECORD_TIMES:
        row[name] = _time(getattr(record, name))
    row["attribute_ids"] = list(record.attribute_ids)
    row["group_ids"] = sorted(record.group_ids)
    try:
        row["amount"] = Decimal(record.amount) if record.amount else None
    except InvalidOperation:
        row["amount"] = None
    row["probability"] = record.probability if record.HasField("probability") else None
    try:
        row["expected_close_date"] = dt.date.fromisoformat(record.expected_close_date) \
            if record.expected_close_date else None
    except ValueError:
        row["expected_close_date"] = None
    return row

"""The pipeline's one protobuf mapper: a record, a change and who made it become event payloads
and envelopes here, and nowhere else (rows never reach Kafka).

``publish`` adds the envelope to the session's unit of work (``crm_kafka.unit_of_work``): it is
written to the outbox when the change's transaction commits, and dropped with a savepoint or a
transaction that rolls back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Actor as ActorMessage
from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import (
    GroupMembershipChanged,
    LeadConverted,
    PipelineRecord,
    RecordDeleted,
    StageChanged,
)
from crm_events.envelope import new_envelope
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.db import utcnow
from crm_kit.identity import Identity
from crm_pipeline.kind import OPPORTUNITY_NAMES, RecordKind

OPPORTUNITY = OPPORTUNITY_NAMES.kind


def _ts(value: Any) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


# -- payloads -------------------------------------------------------------------------------------


def snapshot(kind: RecordKind, row: Any, group_ids: list[str]) -> PipelineRecord:
    """The record's whole state after a change (event-carried state transfer)."""
    record = PipelineRecord(
        id=row.id, kind=kind.kind, title=row.title, description=row.description or "",
        owner_id=row.owner_id, office_id=row.office_id, stage_id=row.stage_id,
        stage_group_id=row.stage_group_id or "", version=row.version,
        created_at=_ts(row.created_at), created_by=row.created_by,
        modified_at=_ts(row.modified_at), modified_by=row.modified_by,
        company_id=row.company_id or "", contact_id=row.contact_id or "", source_id=row.source_id or "",
        priority_id=row.priority_id or "", category_id=row.category_id or "",
        procedure_id=row.procedure_id or "", attribute_ids=list(row.attribute_ids or []), group_ids=group_ids,
        amount="" if row.amount is None else f"{row.amount:.2f}", currency=row.currency or "",
        expected_close_date=row.expected_close_date.isoformat() if row.expected_close_date else "",
        lead_id=row.lead_id or "", converted_opportunity_id=row.converted_opportunity_id or "",
        stage_changed_at=_ts(row.stage_changed_at),
    )
    if row.probability is not None:
        record.probability = row.probability
    return record


def stage_changed(state: PipelineRecord, from_stage: str, to_stage: str, from_group: str | None,
                  to_group: str | None, cause: str) -> StageChanged:
    """``stage_changed`` (and ``stage_group_changed``): the record after the move, and the move."""
    return StageChanged(record=state, from_stage_id=from_stage, to_stage_id=to_stage,
                        from_stage_group_id=from_group or "", to_stage_group_id=to_group or "", cause=cause)


def membership_changed(state: PipelineRecord, group_id: str) -> GroupMembershipChanged:
    return GroupMembershipChanged(record=state, group_id=group_id)


def record_deleted(kind: RecordKind, record_id: str) -> RecordDeleted:
    return RecordDeleted(id=record_id, kind=kind.kind)


def lead_converted(lead: PipelineRecord, opportunity: PipelineRecord) -> LeadConverted:
    return LeadConverted(lead=lead, opportunity=opportunity)


def opportunity_draft(lead: Any, data: Mapping[str, Any], opportunity_id: str, stage_id: str,
                      stage_group_id: str, actor: Actor) -> PipelineRecord:
    """The opportunity a conversion makes (or links), as ``lead.converted`` carries it: the
    conversion's ``data`` where given, else what the lead has."""
    draft = PipelineRecord(
        id=opportunity_id, kind=OPPORTUNITY, title=data.get("title") or lead.title,
        description=data.get("description") if data.get("description") is not None else lead.description,
        company_id=data.get("company_id") or lead.company_id or "",
        contact_id=data.get("contact_id") or lead.contact_id or "",
        owner_id=data.get("owner_id") or lead.owner_id, office_id=lead.office_id,
        stage_id=stage_id, stage_group_id=stage_group_id, lead_id=lead.id,
        source_id=data.get("source_id") or "", priority_id=data.get("priority_id") or "",
        category_id=data.get("category_id") or "", procedure_id=data.get("procedure_id") or "",
        attribute_ids=list(data.get("attribute_ids") or []), group_ids=list(data.get("group_ids") or []),
        amount="" if data.get("amount") is None else f"{data['amount']:.2f}", currency=data.get("currency") or "",
        expected_close_date=data["expected_close_date"].isoformat() if data.get("expected_close_date") else "",
        created_by=actor.user_id, created_at=_ts(utcnow()),
    )
    if data.get("probability") is not None:
        draft.probability = data["probability"]
    return draft


# -- actors and envelopes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who changes a record, and why: the cause goes into history and events."""

    user_id: str
    name: str = ""
    office_id: str = ""
    cause: str = "user"  # "user" | "bulk" | "conversion" | "system" | "trigger:<id>"
    trigger_depth: int = 0
    causation_id: str = ""

    @classmethod
    def of(cls, identity: Identity, cause: str = "user") -> Actor:
        return cls(identity.user_id, identity.name, identity.office_id, cause)

    def because(self, cause: str) -> Actor:
        return replace(self, cause=cause)


def command_actor(envelope: Envelope, office_id: str) -> Actor:
    """A trigger's command (``envelope``) acting on a record of ``office_id``: the trigger is the
    cause, one step deeper than the event that fired it."""
    cause = f"trigger:{envelope.command.trigger_id}"
    return Actor(user_id=cause, name="Automation", office_id=office_id, cause=cause,
                 trigger_depth=envelope.trigger_depth, causation_id=envelope.event_id)


def conversion_actor(envelope: Envelope) -> Actor:
    """Who converted the lead of a ``lead.converted`` event (the opportunity is made in their name)."""
    draft = envelope.lead_converted.opportunity
    return Actor(user_id=envelope.actor.user_id or draft.created_by, name=envelope.actor.name,
                 office_id=draft.office_id, cause="conversion", trigger_depth=envelope.trigger_depth,
                 causation_id=envelope.event_id)


def system_actor(envelope: Envelope) -> Actor:
    """The service itself, reacting to ``envelope`` (clearing a deleted company from its records)."""
    return Actor(user_id="system", name="System", cause="system", causation_id=envelope.event_id)


def actor_message(actor: Actor) -> ActorMessage:
    """Who made a change, as an envelope names them: a trigger by its id, a conversion or the
    system as ``system``, anyone else as ``user``."""
    if actor.cause.startswith("trigger:"):
        kind = actor.cause
    else:
        kind = "system" if actor.cause in ("conversion", "system") else "user"
    return ActorMessage(user_id=actor.user_id, name=actor.name, office_id=actor.office_id, kind=kind)


def envelope(kind: RecordKind, what: str, record_id: str, version: int, payload: Message, actor: Actor) -> Envelope:
    """``<kind>.<what>`` about record ``record_id`` at ``version``, carrying the actor's cause
    chain (trigger depth and causing event)."""
    return new_envelope(kind.event_type(what), kind.kind, record_id, version, payload, actor=actor_message(actor),
                        trigger_depth=actor.trigger_depth, causation_id=actor.causation_id or None)


def publish(session: Session, kind: RecordKind, envelopes: Sequence[Envelope]) -> None:
    """The events of a change, written to the kind's topic when ``session``'s transaction commits."""
    UnitOfWork.of(session).add_all(kind.topic, list(envelopes))

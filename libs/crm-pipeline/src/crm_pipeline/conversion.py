"""Lead -> opportunity conversion, a saga over two services that is never half-done.

1. leads (``convert``): in ONE transaction the lead moves to the default end stage, gets its
   ``converted_opportunity_id`` (allocated here), and ``lead.converted`` goes to the outbox
   carrying the opportunity to create. A second conversion is 409.
2. opportunities (``conversion_handler``): the idempotent consumer creates that opportunity
   with that id; a redelivery, or a worker killed and restarted mid-way, finds it done.
3. The gateway answers the client once the opportunity is readable.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import LeadConverted, PipelineRecord
from crm_catalogue_view import CatalogueReferenceError
from crm_kafka.consumer import Handler
from crm_kit.db import utcnow
from crm_kit.web import Problem
from crm_pipeline.records import REFERENCES, Actor, Records

OPPORTUNITY = "opportunity"


def _require_opportunity_refs(records: Records, session: Session, data: Mapping[str, Any]) -> None:
    checks = [(data.get(f), t, f) for f, t in REFERENCES.items()]
    checks += [(a, "attributes", f"attribute_ids.{i}") for i, a in enumerate(data.get("attribute_ids") or [])]
    checks += [(g, "groups", f"group_ids.{i}") for i, g in enumerate(data.get("group_ids") or [])]
    if data.get("stage_id"):
        checks.append((data["stage_id"], "stage", "stage_id"))
    for value, entity, field in checks:
        if value:
            try:
                records.view.require(session, value, kind=OPPORTUNITY, entity=entity, field_name=field)
            except CatalogueReferenceError as exc:
                raise exc.to_problem() from None


def convert(records: Records, session: Session, lead: Any, data: Mapping[str, Any], actor: Actor) -> tuple[Any, str]:
    """Step 1: move the lead and emit ``lead.converted``; returns (lead, opportunity id)."""
    if lead.converted_opportunity_id:
        raise Problem(409, f"This lead was already converted, to opportunity {lead.converted_opportunity_id}.",
                      opportunity_id=lead.converted_opportunity_id)
    end = records.view.default_end_stage(session, records.kind.kind)
    if end is None:
        raise Problem(409, "No default end stage is configured for leads: an administrator must mark one lead "
                           "stage as the default end stage before leads can be converted.")
    _require_opportunity_refs(records, session, data)
    start = records.view.get(session, data["stage_id"]) if data.get("stage_id") \
        else records.view.default_stage(session, OPPORTUNITY)
    if start is None:
        raise Problem(409, "No default opportunity stage is configured: an administrator must mark one "
                           "opportunity stage as the default before leads can be converted.")
    opportunity_id = str(uuid.uuid4())
    conversion = actor.because("conversion")
    moved = records.update(session, lead, {"stage_id": end.id, "converted_opportunity_id": opportunity_id,
                                           "converted_at": utcnow()}, conversion)
    draft = _draft(lead, data, opportunity_id, start.id, start.attr("stage_group_id") or "", actor)
    records.emit(session, "converted", moved, conversion,
                 LeadConverted(lead=records.snapshot(session, moved), opportunity=draft))
    return moved, opportunity_id


def _draft(lead: Any, data: Mapping[str, Any], opportunity_id: str, stage_id: str, stage_group_id: str,
           actor: Actor) -> PipelineRecord:
    now = Timestamp()
    now.FromDatetime(utcnow())
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
        created_by=actor.user_id, created_at=now,
    )
    if data.get("probability") is not None:
        draft.probability = data["probability"]
    return draft


def conversion_handler(records: Records) -> Handler:
    """Step 2, in the opportunities service: create the converted lead's opportunity once."""

    def handle(session: Session, envelope: Envelope) -> None:
        if envelope.WhichOneof("payload") != "lead_converted":
            return
        draft = envelope.lead_converted.opportunity
        if records.get(session, draft.id) is not None:
            return  # created before (the inbox makes this rare: e.g. a replay on a restored database)
        values: dict[str, Any] = {
            "title": draft.title, "description": draft.description, "owner_id": draft.owner_id,
            "office_id": draft.office_id, "stage_id": draft.stage_id, "stage_group_id": draft.stage_group_id or None,
            "lead_id": draft.lead_id, "attribute_ids": list(draft.attribute_ids), "group_ids": list(draft.group_ids),
            "currency": draft.currency or None, "amount": draft.amount or None,
            "expected_close_date": draft.expected_close_date or None,
            "probability": draft.probability if draft.HasField("probability") else None,
        }
        for field in ("company_id", "contact_id", "source_id", "priority_id", "category_id", "procedure_id"):
            values[field] = getattr(draft, field) or None
        if values["expected_close_date"]:
            import datetime as dt

            values["expected_close_date"] = dt.date.fromisoformat(values["expected_close_date"])
        actor = Actor(user_id=envelope.actor.user_id or draft.created_by, name=envelope.actor.name,
                      office_id=draft.office_id, cause="conversion", trigger_depth=envelope.trigger_depth,
                      causation_id=envelope.event_id)
        records.create(session, values, actor, record_id=draft.id, trusted=True)

    return handle

"""Lead -> opportunity conversion, a saga over three services that is never half-done.

1. leads (``convert``): in ONE transaction the lead moves to the default end stage, gets its
   ``converted_opportunity_id`` and ``lead.converted`` goes to the outbox carrying the
   opportunity: a new one (its id allocated here) or, with ``{"opportunity_id": ...}``, an
   existing one the caller may edit. A second conversion is 409; so is a conversion into an
   opportunity that has a lead already (the leads table's unique index on
   ``converted_opportunity_id`` settles two conversions racing for the same opportunity).
2. opportunities (``conversion_handler``): the idempotent consumer creates that opportunity
   with that id, or sets ``lead_id`` on the existing one (and its ``company_id``/``contact_id``
   where they are empty); a redelivery, or a worker killed and restarted mid-way, finds it done.
3. linking carries the lead's contacts and job orders over (from the same event).
4. The gateway answers the client once the opportunity and what was carried over are readable,
   with the contacts whose role did not come over as ``warnings``.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord
from crm_kafka.consumer import Handler
from crm_kit.db import utcnow
from crm_kit.identity import Identity
from crm_pipeline import events
from crm_pipeline.errors import (
    AlreadyConverted,
    MissingPermission,
    NoDefaultEndStage,
    NoDefaultOpportunityStage,
    OpportunityHasLead,
    UnknownOpportunity,
)
from crm_pipeline.events import Actor
from crm_pipeline.kind import OPPORTUNITY_NAMES
from crm_pipeline.queries import ALL_OFFICES_ROLE
from crm_pipeline.records import REFERENCES, Records
from crm_pipeline.references import DELETED, FILE_FIELDS, OpportunityViews

log = logging.getLogger(__name__)

OPPORTUNITY = OPPORTUNITY_NAMES.kind
EDIT_OPPORTUNITIES = OPPORTUNITY_NAMES.permission("edit")


def _require_opportunity_refs(records: Records, session: Session, data: Mapping[str, Any]) -> None:
    records.files.require(session, data)
    checks = [(data.get(f), t, f) for f, t in REFERENCES.items()]
    checks += [(a, "attributes", f"attribute_ids.{i}") for i, a in enumerate(data.get("attribute_ids") or [])]
    checks += [(g, "groups", f"group_ids.{i}") for i, g in enumerate(data.get("group_ids") or [])]
    if data.get("stage_id"):
        checks.append((data["stage_id"], "stage", "stage_id"))
    for value, entity, field in checks:
        if value:
            records.view.require(session, value, kind=OPPORTUNITY, entity=entity, field_name=field)


def _existing_opportunity(records: Records, views: OpportunityViews, session: Session, identity: Identity,
                          opportunity_id: str) -> Any:
    """The opportunity a lead converts into: one the caller may see (``UnknownOpportunity`` when
    missing or not visible; the permission to edit it is checked first) that has no lead yet
    (``OpportunityHasLead``)."""
    found = views.get(session, opportunity_id)
    if found is None or (ALL_OFFICES_ROLE not in identity.roles and found.office_id != identity.office_id):
        raise UnknownOpportunity(opportunity_id)
    other = session.execute(select(records.table.c.id).where(
        records.table.c.converted_opportunity_id == opportunity_id)).scalar()
    lead_id = found.lead_id or other
    if lead_id:
        raise OpportunityHasLead(opportunity_id, lead_id)
    return found


def convert(records: Records, session: Session, lead: Any, data: Mapping[str, Any], actor: Actor, *,
            identity: Identity | None = None, views: OpportunityViews | None = None) -> tuple[Any, str]:
    """Step 1: move the lead and emit ``lead.converted``; returns (lead, opportunity id)."""
    if lead.converted_opportunity_id:
        raise AlreadyConverted(lead.converted_opportunity_id)
    existing_id = data.get("opportunity_id")
    if existing_id and (identity is None or views is None):
        raise ValueError("converting into an existing opportunity needs the caller and the opportunity views")
    if existing_id and not identity.has(EDIT_OPPORTUNITIES):  # type: ignore[union-attr]
        raise MissingPermission("Converting into an existing opportunity", EDIT_OPPORTUNITIES)
    end = records.view.default_end_stage(session, records.kind.kind)
    if end is None:
        raise NoDefaultEndStage()
    if existing_id:
        _existing_opportunity(records, views, session, identity, existing_id)  # type: ignore[arg-type]
        opportunity_id = existing_id
        # Only used if the opportunity is gone by the time the opportunities service links it
        # (deleted in between): it is then made again from the lead, rather than left missing.
        start = records.view.default_stage(session, OPPORTUNITY)
    else:
        _require_opportunity_refs(records, session, data)
        start = records.view.get(session, data["stage_id"]) if data.get("stage_id") \
            else records.view.default_stage(session, OPPORTUNITY)
        if start is None:
            raise NoDefaultOpportunityStage()
        opportunity_id = str(uuid.uuid4())
    conversion = actor.because("conversion")
    try:
        with session.begin_nested():
            moved = records.update(session, lead, {"stage_id": end.id, "converted_opportunity_id": opportunity_id,
                                                   "converted_at": utcnow()}, conversion)
    except IntegrityError:
        # Another lead was converted into this opportunity at the same moment and won.
        raise OpportunityHasLead(opportunity_id) from None
    fields = {} if existing_id else data
    draft = events.opportunity_draft(lead, fields, opportunity_id, start.id if start else "",
                                     (start.attr("stage_group_id") or "") if start else "", actor)
    records.emit(session, "converted", moved, conversion,
                 events.lead_converted(records.snapshot(session, moved), draft))
    return moved, opportunity_id


def _file_or_none(records: Records, session: Session, field: str, value: str) -> str | None:
    """A company/contact id the opportunity may take: not one this service knows was deleted
    (its copy may lag behind the lead's, so an id it has not heard of yet is taken: a later
    deletion clears it)."""
    if not value:
        return None
    if records.files.state(session, value, FILE_FIELDS[field], lock=True) == DELETED:
        log.info("conversion: %s %s was deleted meanwhile; the opportunity does not take it", field, value)
        return None
    return value


def conversion_handler(records: Records) -> Handler:
    """Step 2, in the opportunities service: create the converted lead's opportunity once, or
    link the existing one it was converted into."""

    def handle(session: Session, envelope: Envelope) -> None:
        if envelope.WhichOneof("payload") != "lead_converted":
            return
        draft = envelope.lead_converted.opportunity
        actor = events.conversion_actor(envelope)
        row = records.get(session, draft.id)
        if row is not None:
            _link_existing(records, session, row, draft, actor)
            return
        stage_id = draft.stage_id
        if not stage_id:
            # An existing opportunity deleted before it could be linked, and no default stage
            # when the lead was converted: make it in this service's default stage.
            default = records.view.default_stage(session, OPPORTUNITY)
            if default is None:
                log.error("lead.converted %s: opportunity %s is gone and no default opportunity stage is "
                          "configured; it cannot be made again", envelope.event_id, draft.id)
                return
            stage_id = default.id
        values: dict[str, Any] = {
            "title": draft.title, "description": draft.description, "owner_id": draft.owner_id,
            "office_id": draft.office_id, "stage_id": stage_id, "stage_group_id": draft.stage_group_id or None,
            "lead_id": draft.lead_id, "attribute_ids": list(draft.attribute_ids), "group_ids": list(draft.group_ids),
            "currency": draft.currency or None, "amount": draft.amount or None,
            "expected_close_date": dt.date.fromisoformat(draft.expected_close_date)
            if draft.expected_close_date else None,
            "probability": draft.probability if draft.HasField("probability") else None,
        }
        for field in ("source_id", "priority_id", "category_id", "procedure_id"):
            values[field] = getattr(draft, field) or None
        for field in FILE_FIELDS:
            values[field] = _file_or_none(records, session, field, getattr(draft, field))
        records.create(session, values, actor, record_id=draft.id, trusted=True)

    return handle


def _link_existing(records: Records, session: Session, row: Any, draft: PipelineRecord, actor: Actor) -> None:
    """The lead was converted into this existing opportunity: it gets ``lead_id``, and the
    lead's company and contact where it has none. Done already (a redelivery, or the same
    conversion under another event id): nothing changes."""
    if row.lead_id == draft.lead_id:
        return
    if row.lead_id:
        # The leads service refuses this (409); only a lead deleted and its opportunity then
        # converted into again could get here. The first lead stays.
        log.error("lead.converted: opportunity %s has lead %s already; lead %s is not set on it",
                  row.id, row.lead_id, draft.lead_id)
        return
    changes: dict[str, Any] = {"lead_id": draft.lead_id}
    for field in FILE_FIELDS:
        if not getattr(row, field):
            value = _file_or_none(records, session, field, getattr(draft, field))
            if value:
                changes[field] = value
    records.update(session, row, changes, actor, check=False)

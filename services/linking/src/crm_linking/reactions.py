"""How linking reacts to the records' events (``RECORD_TOPICS``: the leads' and the opportunities').

They run in the worker's ``records`` consumer, after the record view has taken the same event
(``records.RECORDS``), in the same transaction: one consumer group, one inbox row and one offset
per event for both (two groups until linking_0005).

- ``<kind>.deleted``: the record loses its links (events for each removed link); its
  activities stay, with ``lead_id``/``opportunity_id`` cleared (``linking.activity.updated``),
  and then belong to the office they were created in; its timeline goes with it.
- ``<kind>.created``, ``stage_changed``, ``stage_group_changed``, ``added_to_group``,
  ``removed_from_group``, ``lead.converted``: timeline entries at the event's ``occurred_at``,
  carrying its ``event_id``.
- ``lead.converted``: the lead's contacts and job orders are carried over to the opportunity
  (a new one, or an existing one the lead converted into; its company and main contact come with
  the opportunity's own events).

Every effect is idempotent in itself, not only through the inbox: a timeline entry is
written once per (record, type, event), the conversion entries once per conversion, and
carried-over links only when missing - so the same conversion delivered twice, even under
two event ids, links each contact and job order once.

Carrying a contact over: every contact of the lead comes over - none is dropped. Its role maps
to the active opportunity role with the same ``code`` (MAIN -> MAIN, SIGN -> SIGN, ...). A lead
role without such a counterpart is not guessed at, and a MAIN or SIGN the opportunity has
already (a conversion into an existing opportunity) is not taken from it: that contact comes
over without a role (``role_id`` null), with a warning in the log, and its ``contact_linked``
timeline entry and ``linking.contact.linked`` event say which lead role was dropped
(``role_dropped_from``: the lead role's code), so the conversion can report it. A job order
that already has another opportunity stays where it is (a job order links to at most one
opportunity), with a log line.

The opportunity's main contact follows its own ``contact_id`` (``links.sync_main_contact``,
from the record view): whichever of the two events comes first, the end state is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_catalogue_view import CatalogueView
from crm_events.envelope import record_state
from crm_kafka.consumer import Dispatch
from crm_kit.db import utcnow
from crm_linking import journal
from crm_linking.errors import ConcurrentChange
from crm_linking.journal import actor_id, occurred_at
from crm_linking.links import (
    RECORD_KINDS,
    add_contact_link,
    add_job_order_link,
    contact_link,
    exclusive_code,
    exclusive_link,
    job_order_link_of_kind,
    remove_contact_link,
    remove_job_order_link,
)
from crm_linking.tables import (
    activities,
    catalogue_view,
    contacts,
    job_orders,
    record_contacts,
    record_job_orders,
    timeline,
)

log = logging.getLogger(__name__)


def _subject(envelope: Envelope) -> tuple[str, str]:
    """(kind, id) of the record an event is about."""
    record = record_state(envelope)
    if record is not None and record.id:
        return record.kind or envelope.aggregate_type, record.id
    return envelope.aggregate_type, envelope.aggregate_id


def _note_once(session: Session, kind: str, record_id: str, type_: str, data: Mapping[str, Any],
               envelope: Envelope) -> None:
    """A timeline entry for ``envelope``, unless this event already left one of this type."""
    journal.note_once(session, kind, record_id, type_, {**data, "by": actor_id(envelope)}, at=occurred_at(envelope),
                      event_id=envelope.event_id)


def _created(session: Session, envelope: Envelope) -> None:
    kind, record_id = _subject(envelope)
    record = record_state(envelope)
    _note_once(session, kind, record_id, "created",
               {"title": record.title if record else "", "stage_id": record.stage_id if record else ""}, envelope)


def _stage_changed(session: Session, envelope: Envelope) -> None:
    kind, record_id = _subject(envelope)
    moved = envelope.stage_changed
    _note_once(session, kind, record_id, "stage_changed",
               {"from_stage_id": moved.from_stage_id or None, "to_stage_id": moved.to_stage_id,
                "cause": moved.cause}, envelope)


def _stage_group_changed(session: Session, envelope: Envelope) -> None:
    kind, record_id = _subject(envelope)
    moved = envelope.stage_changed
    _note_once(session, kind, record_id, "stage_group_changed",
               {"from_stage_group_id": moved.from_stage_group_id or None,
                "to_stage_group_id": moved.to_stage_group_id or None, "cause": moved.cause}, envelope)


def _group_membership(what: str) -> Any:
    def handle(session: Session, envelope: Envelope) -> None:
        kind, record_id = _subject(envelope)
        _note_once(session, kind, record_id, what, {"group_id": envelope.group_changed.group_id}, envelope)
    return handle


def _deleted(session: Session, envelope: Envelope) -> None:
    gone = envelope.record_deleted
    kind = gone.kind or envelope.aggregate_type
    record_id = gone.id or envelope.aggregate_id
    if kind not in RECORD_KINDS:
        return
    by, cause = actor_id(envelope), envelope.event_id
    for link in session.execute(select(record_contacts).where(
            record_contacts.c.record_kind == kind, record_contacts.c.record_id == record_id)).all():
        remove_contact_link(session, kind, record_id, link, by=by, causation_id=cause, note=False)
    for job_order_id in session.execute(select(record_job_orders.c.job_order_id).where(
            record_job_orders.c.record_kind == kind, record_job_orders.c.record_id == record_id)).scalars().all():
        remove_job_order_link(session, kind, record_id, job_order_id, by=by, causation_id=cause, note=False)
    owner = activities.c.lead_id if kind == "lead" else activities.c.opportunity_id
    for activity in session.execute(select(activities).where(owner == record_id)).all():
        now = utcnow()
        session.execute(update(activities).where(activities.c.id == activity.id).values(
            {owner: None, activities.c.version: activity.version + 1, activities.c.modified_at: now,
             activities.c.modified_by: by}))
        row = session.execute(select(activities).where(activities.c.id == activity.id)).one()
        journal.publish(session, "linking.activity.updated", "activity", row.id, dict(row._mapping),
                        version=row.version, record_kind=kind, record_id=record_id, causation_id=cause)
    session.execute(delete(timeline).where(timeline.c.record_kind == kind, timeline.c.record_id == record_id))


def _converted(session: Session, envelope: Envelope) -> None:
    conversion = envelope.lead_converted
    lead_id = conversion.lead.id or envelope.aggregate_id
    opportunity_id = conversion.opportunity.id
    if not opportunity_id:
        log.warning("lead.converted %s names no opportunity; nothing to carry over", envelope.event_id)
        return
    _conversion_note(session, "lead", lead_id, "converted", {"opportunity_id": opportunity_id}, envelope)
    _conversion_note(session, "opportunity", opportunity_id, "converted_from_lead", {"lead_id": lead_id}, envelope)
    carry_over(session, envelope, lead_id, opportunity_id)


def _conversion_note(session: Session, kind: str, record_id: str, type_: str, data: Mapping[str, Any],
                     envelope: Envelope) -> None:
    """Once per conversion, whatever the event id (a lead converts once)."""
    existing = session.execute(select(timeline.c.data).where(
        timeline.c.record_kind == kind, timeline.c.record_id == record_id, timeline.c.type == type_)).scalars()
    if any(all(entry.get(k) == v for k, v in data.items()) for entry in existing):
        return
    journal.note(session, kind, record_id, type_, {**data, "by": actor_id(envelope)}, at=occurred_at(envelope),
                 event_id=envelope.event_id)


def _role_codes(session: Session, kind: str) -> dict[str, str]:
    """Role id -> code of ``kind``'s roles, deleted ones included (the catalogue copy keeps them)."""
    rows = session.execute(select(catalogue_view.c.id, catalogue_view.c.code).where(
        catalogue_view.c.kind == kind, catalogue_view.c.entity == "roles")).all()
    return {row.id: row.code for row in rows}


def carry_over(session: Session, envelope: Envelope, lead_id: str, opportunity_id: str,
               view: CatalogueView | None = None) -> None:
    """Link every contact of the lead (with the matching role, or none) and its job orders to the
    opportunity; only links that do not exist yet are inserted, each with its event and timeline
    entry."""
    view = view or CatalogueView()
    at, by, cause = occurred_at(envelope), actor_id(envelope), envelope.event_id
    extra = {"cause": "conversion", "lead_id": lead_id}
    lead_codes = _role_codes(session, "lead")
    opportunity_roles = {r.code: r for r in view.entries(session, "opportunity", "roles", active_only=True)}
    links = session.execute(
        select(record_contacts.c.role_id, contacts)
        .join(contacts, contacts.c.id == record_contacts.c.contact_id)
        .where(record_contacts.c.record_kind == "lead", record_contacts.c.record_id == lead_id)
        .order_by(record_contacts.c.linked_at, record_contacts.c.contact_id)).all()
    for link in links:
        if contact_link(session, "opportunity", opportunity_id, link.id) is not None:
            continue
        lead_code = (lead_codes.get(link.role_id) or link.role_id) if link.role_id else None
        role = opportunity_roles.get(lead_code) if lead_code else None
        code = exclusive_code(role)
        why = "no active opportunity role has the same code"
        if role is not None and code and exclusive_link(session, "opportunity", opportunity_id, code) is not None:
            role, why = None, f"the opportunity has a {code} contact already"
        if role is not None:
            if add_contact_link(session, "opportunity", opportunity_id, link, role.id, exclusive=code, by=by,
                                causation_id=cause, at=at, event_id=cause, note_extra=extra):
                continue
            if contact_link(session, "opportunity", opportunity_id, link.id) is not None:
                continue  # linked meanwhile (its main contact, from the opportunity's own event)
            why = f"the opportunity got a {code} contact meanwhile"
        dropped = {"role_dropped_from": lead_code} if lead_code else {}
        if lead_code:
            log.warning("conversion of lead %s: contact %s comes over to opportunity %s without a role (lead role "
                        "%s: %s)", lead_id, link.id, opportunity_id, lead_code, why)
        if not add_contact_link(session, "opportunity", opportunity_id, link, None, by=by, causation_id=cause, at=at,
                                event_id=cause, note_extra={**extra, **dropped}, event_extra=dropped):
            if contact_link(session, "opportunity", opportunity_id, link.id) is None:
                raise ConcurrentChange(f"conversion of lead {lead_id}: contact {link.id} could not be "
                                            f"linked to opportunity {opportunity_id}")
    orders = session.execute(
        select(job_orders).join(record_job_orders, record_job_orders.c.job_order_id == job_orders.c.id)
        .where(record_job_orders.c.record_kind == "lead", record_job_orders.c.record_id == lead_id)
        .order_by(record_job_orders.c.linked_at, job_orders.c.id)).all()
    for order in orders:
        current = job_order_link_of_kind(session, order.id, "opportunity")
        if current is not None:
            if current.record_id != opportunity_id:
                log.info("conversion of lead %s: job order %s stays on opportunity %s", lead_id, order.id,
                         current.record_id)
            continue
        add_job_order_link(session, "opportunity", opportunity_id, order, by=by, causation_id=cause, at=at,
                           event_id=cause, note_extra=extra)


_HANDLERS: dict[str, Any] = {"lead.converted": _converted}
for _kind in RECORD_KINDS:
    _HANDLERS.update({
        f"{_kind}.created": _created,
        f"{_kind}.stage_changed": _stage_changed,
        f"{_kind}.stage_group_changed": _stage_group_changed,
        f"{_kind}.added_to_group": _group_membership("added_to_group"),
        f"{_kind}.removed_from_group": _group_membership("removed_from_group"),
        f"{_kind}.deleted": _deleted,
    })
# One record event's effects on links and timelines (other event types: ignored).
reactions_handler = Dispatch(_HANDLERS)

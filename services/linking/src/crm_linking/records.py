"""Linking's read model of leads and opportunities (``record_views``), kept from their events by
the worker's ``records`` consumer.

Every record event carries the record after the change: the newest state of each record is
kept, and a deleted record is forgotten. A newer state also keeps the record's contacts tab in
step with its ``contact_id`` (its main contact, ``links.sync_main_contact``).
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_events.envelope import record_state
from crm_kit.db import utcnow
from crm_linking.journal import actor_id, occurred_at
from crm_linking.links import RECORD_KINDS, sync_main_contact
from crm_linking.tables import record_views


def apply_record_event(session: Session, envelope: Envelope) -> None:
    """Keep the newest state of a record from any of its events (every record event carries
    the record after the change); a deleted record is forgotten.

    A newer state also keeps the record's contacts tab in step with its ``contact_id`` (its main
    contact, ``links.sync_main_contact``): applied once per version, in version order, so a
    redelivered or late older event changes nothing.
    """
    if envelope.WhichOneof("payload") == "record_deleted":
        session.execute(delete(record_views).where(record_views.c.id == envelope.aggregate_id))
        return
    record = record_state(envelope)
    if record is None:
        return
    current = session.execute(select(record_views.c.version).where(record_views.c.id == record.id)).scalar()
    values = {"kind": record.kind, "title": record.title, "owner_id": record.owner_id,
              "office_id": record.office_id, "stage_id": record.stage_id or None,
              "stage_group_id": record.stage_group_id or None, "company_id": record.company_id or None,
              "contact_id": record.contact_id or None, "lead_id": record.lead_id or None,
              "version": record.version, "updated_at": utcnow()}
    if current is None:
        session.execute(record_views.insert().values(id=record.id, **values))
    elif record.version > current:
        session.execute(update(record_views).where(record_views.c.id == record.id).values(**values))
    else:
        return
    if record.kind in RECORD_KINDS:
        sync_main_contact(session, record.kind, record.id, record.contact_id or None, by=actor_id(envelope),
                          causation_id=envelope.event_id, at=occurred_at(envelope), event_id=envelope.event_id)

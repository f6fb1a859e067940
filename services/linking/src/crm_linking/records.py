"""Linking's read model of leads and opportunities (``record_views``), kept from their events by
the worker's ``records`` consumer (``RECORDS``), which then reacts to the same event
(``reactions.py``: timelines, deletions, conversions) in the same transaction.

Every record event carries the record after the change: the newest state of each record is
kept and a deleted record is forgotten - the kit's one implementation of that
(``crm_kafka.record_view.RecordView``). A strictly newer state also keeps the record's contacts
tab in step with its ``contact_id`` (its main contact, ``links.sync_main_contact``): applied once
per version, in version order, so a redelivered or late older event changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord
from crm_kafka.record_view import RecordView
from crm_kit.db import utcnow
from crm_linking.journal import actor_id, occurred_at
from crm_linking.links import RECORD_KINDS, sync_main_contact
from crm_linking.reactions import reactions_handler
from crm_linking.tables import record_views


def _columns(record: PipelineRecord, _envelope: Envelope) -> Mapping[str, Any]:
    return {"kind": record.kind, "title": record.title, "owner_id": record.owner_id, "office_id": record.office_id,
            "stage_id": record.stage_id or None, "stage_group_id": record.stage_group_id or None,
            "company_id": record.company_id or None, "contact_id": record.contact_id or None,
            "lead_id": record.lead_id or None, "updated_at": utcnow()}


RECORD_VIEWS = RecordView(record_views, _columns)


def apply_record_event(session: Session, envelope: Envelope) -> None:
    """Take one record event into the read model; a strictly newer state of a lead or opportunity
    also syncs its main contact."""
    seen = RECORD_VIEWS.apply(session, envelope)
    record = seen.record
    if seen.newer and record is not None and record.kind in RECORD_KINDS:
        sync_main_contact(session, record.kind, record.id, record.contact_id or None, by=actor_id(envelope),
                          causation_id=envelope.event_id, at=occurred_at(envelope), event_id=envelope.event_id)


def take_record_event(session: Session, envelope: Envelope) -> None:
    """The worker's one handler of record events: the read model first, then the reactions. One
    consumer group for both halves the polls, decodes, inbox rows and offsets per event (linking
    read the record topics in two groups, ``records`` and ``reactions``, until linking_0005)."""
    apply_record_event(session, envelope)
    reactions_handler(session, envelope)


RECORDS = RECORD_VIEWS.consumer("records", take_record_event)

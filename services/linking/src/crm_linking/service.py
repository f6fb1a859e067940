"""The linking service: files (companies, contacts, job orders, placements, activities),
their links to leads and opportunities, and its read model of those records.

Its worker runs three consumers: ``records`` (``apply_record_event``: the read model of leads
and opportunities, and each record's main contact on its contacts tab), ``catalogue`` (its copy
of the catalogue) and ``reactions`` (``reactions.py``: timelines, deletions, conversions), and a loop that runs the
CSV imports of companies and contacts (``crm_kit.imports``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_catalogue_view import consumer_spec
from crm_events.envelope import record_state
from crm_kafka.service import domain_service
from crm_kafka.worker import ConsumerSpec, WorkerPlan
from crm_kit.db import Database, utcnow
from crm_kit.imports import ServiceImports
from crm_kit.settings import Settings
from crm_linking.files import BULK_CREATABLE, SPECS, build_files_api, file_importer
from crm_linking.links import RECORD_KINDS, build_links_api, sync_main_contact
from crm_linking.reactions import REACTIONS, actor_id, occurred_at
from crm_linking.tables import metadata, record_views


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


# CSV imports of the files that have a bulk create (crm_kit.imports): routes and a worker loop.
IMPORTS = ServiceImports(metadata, [file_importer(SPECS[c]) for c in BULK_CREATABLE])


def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
    return WorkerPlan(service="linking", consumers=[
        ConsumerSpec("records", ["crm.leads.v1", "crm.opportunities.v1"], apply_record_event),
        consumer_spec(),
        REACTIONS,
    ], extra_loops=[IMPORTS.loop(database)])


SERVICE = domain_service(
    "linking", "Linking service", apis=[build_files_api(), build_links_api(), IMPORTS.api()], metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions", worker_plan=worker_plan,
)

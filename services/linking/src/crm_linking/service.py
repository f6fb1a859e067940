"""The linking service: files (companies, contacts, job orders, placements, activities),
their links to leads and opportunities, and its read model of those records."""

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
from crm_kit.settings import Settings
from crm_linking.files import build_files_api
from crm_linking.links import build_links_api
from crm_linking.reactions import REACTIONS
from crm_linking.tables import metadata, record_views


def apply_record_event(session: Session, envelope: Envelope) -> None:
    """Keep the newest state of a record from any of its events (every record event carries
    the record after the change); a deleted record is forgotten."""
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


def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
    return WorkerPlan(service="linking", consumers=[
        ConsumerSpec("records", ["crm.leads.v1", "crm.opportunities.v1"], apply_record_event),
        consumer_spec(),
        REACTIONS,
    ])


SERVICE = domain_service(
    "linking", "Linking service", apis=[build_files_api(), build_links_api()], metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions", worker_plan=worker_plan,
)

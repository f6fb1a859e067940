"""The linking service. Foundation scope: its read model of leads and opportunities, kept
from their events (tabs and activity details will read it instead of calling them)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Integer, String, Table, delete, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_catalogue_view import catalogue_view_table, consumer_spec
from crm_events.envelope import record_state
from crm_kafka.service import domain_service
from crm_kafka.worker import ConsumerSpec, WorkerPlan
from crm_kit.db import Database, UTCDateTime, new_metadata, utcnow
from crm_kit.settings import Settings

metadata = new_metadata()
record_views = Table(
    "record_views",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("title", String(500), nullable=False),
    Column("owner_id", String(200), nullable=False),
    Column("office_id", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
catalogue_view_table(metadata)


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
              "office_id": record.office_id, "version": record.version, "updated_at": utcnow()}
    if current is None:
        session.execute(record_views.insert().values(id=record.id, **values))
    elif record.version > current:
        session.execute(update(record_views).where(record_views.c.id == record.id).values(**values))


def worker_plan(settings: Settings, database: Database) -> WorkerPlan:
    return WorkerPlan(service="linking", consumers=[
        ConsumerSpec("records", ["crm.leads.v1", "crm.opportunities.v1"], apply_record_event),
        consumer_spec(),
    ])


SERVICE = domain_service(
    "linking", "Linking service", apis=[], metadata=metadata,
    migrations=Path(__file__).parent / "migrations" / "versions", worker_plan=worker_plan,
)

"""The catalogue as the fast tests drive it: its rules called directly on a SQLite database, one
transaction per change as a request has, and what each change collected in its unit of work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_catalogue.journal import Journal
from crm_catalogue.tables import stages, table_entries
from crm_catalogue.usage import STAGE_USAGE
from crm_catalogue.views import STAGE, TABLE_ENTRY, TEMPLATE, View
from crm_events.envelope import new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.db import Database
from crm_kit.identity import Identity

ADMIN = Identity(user_id="u-admin", name="Ada Admin", office_id="office-1", roles=("admin",))


class Catalogue:
    """The catalogue's database and its rules, one transaction per change."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def change(self, rule: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, list[tuple[str, Envelope]]]:
        """Run ``rule(session, journal, *args)`` in its own transaction, as a request does: the rule's
        result and the (topic, event) pairs its unit of work collected and the commit wrote."""
        with self.db.transaction() as session:
            journal = Journal(session, ADMIN)
            result = rule(session, journal, *args, **kwargs)
            journal.publish()
            collected = [(topic, envelope) for topic, envelope, _key in UnitOfWork.of(session).pending]
        return result, collected

    def stage(self, kind: str, code: str) -> View:
        with self.db.transaction() as session:
            stage_id = session.execute(select(stages.c.id).where(stages.c.kind == kind, stages.c.code == code)
                                       ).scalar_one()
            view = STAGE.load(session, stage_id)
        assert view is not None
        return view

    def stage_by_id(self, stage_id: str) -> View:
        with self.db.transaction() as session:
            view = STAGE.load(session, stage_id)
        assert view is not None
        return view

    def entry(self, kind: str, table_name: str, code: str) -> View:
        with self.db.transaction() as session:
            entry_id = session.execute(select(table_entries.c.id).where(
                table_entries.c.kind == kind, table_entries.c.table_name == table_name,
                table_entries.c.code == code)).scalar_one()
            view = TABLE_ENTRY.load(session, entry_id)
        assert view is not None
        return view

    def template(self, template_id: str) -> View:
        with self.db.transaction() as session:
            view = TEMPLATE.load(session, template_id)
        assert view is not None
        return view

    def defaults(self, kind: str) -> list[str]:
        """The codes of ``kind``'s stages flagged default."""
        with self.db.transaction() as session:
            return list(session.execute(select(stages.c.code).where(stages.c.kind == kind,
                                                                    stages.c.is_default.is_(True))).scalars())

    def outbox_size(self) -> int:
        """How many events the outbox holds (a refused change adds none)."""
        with self.db.transaction() as session:
            return session.execute(select(func.count()).select_from(OUTBOX)).scalar_one()

    def record_event(self, envelope: Envelope) -> None:
        """Hand a record event to the usage read model, in a transaction as the worker does."""
        with self.db.transaction() as session:
            STAGE_USAGE.apply(session, envelope)


def record_event(kind: str, record_id: str, version: int, stage_id: str = "", *, deleted: bool = False) -> Envelope:
    """An event of a lead or opportunity as its service writes it (the record after the change)."""
    payload: Any = (RecordDeleted(id=record_id, kind=kind) if deleted else
                    PipelineRecord(id=record_id, kind=kind, title="Test", stage_id=stage_id, version=version))
    return new_envelope(f"{kind}.{'deleted' if deleted else 'updated'}", kind, record_id, version, payload,
                        producer=f"{kind}s-test")


def summary(events: list[tuple[str, Envelope]]) -> list[tuple[str, str, int]]:
    """(event type, aggregate id, version) of each collected event."""
    return [(e.event_type, e.aggregate_id, e.aggregate_version) for _topic, e in events]

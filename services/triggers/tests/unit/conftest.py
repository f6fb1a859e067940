"""Fast tests of the triggers' rules: a SQLite file per test with the service's tables (no Kafka,
no PostgreSQL), a catalogue copy fed with catalogue events, and record events built as the
leads and opportunities services send them."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.records_pb2 import GroupMembershipChanged, PipelineRecord, RecordDeleted, StageChanged
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kit.db import Database, utcnow
from crm_kit.migrations import upgrade
from crm_triggers.tables import executions, metadata, record_states, schedule, trigger_rules


class World:
    """One triggers database with a small lead catalogue: stage groups OPEN and CLOSED, stages NEW
    and NEXT (open), WON (closed), DONE (closed, an end stage) and OLD (inactive), sources WEB and
    FAIR, groups VIP and GONE (inactive)."""

    def __init__(self, db: Database, ids: dict[str, str] | None = None) -> None:
        self.db = db
        if ids is not None:
            self.ids = ids
            return
        self.ids = {"open": self.put("stage_groups", "OPEN"), "closed": self.put("stage_groups", "CLOSED")}
        self.ids["new"] = self.put("stage", "NEW", is_default=True, stage_group_id=self.ids["open"])
        self.ids["next"] = self.put("stage", "NEXT", stage_group_id=self.ids["open"])
        self.ids["won"] = self.put("stage", "WON", stage_group_id=self.ids["closed"])
        self.ids["done"] = self.put("stage", "DONE", is_end=True, stage_group_id=self.ids["closed"])
        self.ids["old"] = self.put("stage", "OLD", active=False, stage_group_id=self.ids["closed"])
        self.ids["web"] = self.put("sources", "WEB")
        self.ids["fair"] = self.put("sources", "FAIR")
        self.ids["vip"] = self.put("groups", "VIP")
        self.ids["gone"] = self.put("groups", "GONE", active=False)

    def put(self, entity: str, code: str, *, kind: str = "lead", active: bool = True, **attributes: Any) -> str:
        entry_id = str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        entry = CatalogueEntry(id=entry_id, kind=kind, entity=entity, code=code, names={"en": code}, index=0,
                               active=active, version=1, attributes=attrs)
        event_kind = "stage" if entity == "stage" else "table_entry"
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope(f"catalogue.{event_kind}.updated", entity, entry_id, 1, entry))
        return entry_id

    def trigger(self, event: dict[str, Any], *actions: dict[str, Any], conditions: dict[str, Any] | None = None,
                active: bool = True, kind: str = "lead", name: str | None = None) -> str:
        trigger_id = str(uuid.uuid4())
        now = utcnow()
        with self.db.transaction() as s:
            s.execute(trigger_rules.insert().values(
                id=trigger_id, name=name or f"T {trigger_id[:8]}", kind=kind, active=active, version=1,
                definition={"event": event, "conditions": conditions or {}, "actions": list(actions)},
                created_at=now, created_by="u1", modified_at=now, modified_by="u1"))
        return trigger_id

    def rule(self, trigger_id: str) -> Any:
        with self.db.transaction() as s:
            return s.execute(select(trigger_rules).where(trigger_rules.c.id == trigger_id)).first()

    def record(self, stage: str, version: int, *, record_id: str | None = None, source: str = "",
               groups: tuple[str, ...] = (), modified_at: dt.datetime | None = None,
               converted: bool = False) -> PipelineRecord:
        closed = stage in ("won", "done", "old")
        r = PipelineRecord(id=record_id or str(uuid.uuid4()), kind="lead", title="Acme", owner_id="u1",
                           office_id="o1", stage_id=self.ids[stage], stage_group_id=self.ids["closed" if closed
                                                                                            else "open"],
                           version=version, source_id=self.ids.get(source, ""), group_ids=[self.ids[g] for g in groups],
                           converted_opportunity_id=str(uuid.uuid4()) if converted else "")
        r.modified_at.FromDatetime(modified_at or utcnow())
        return r

    @staticmethod
    def event(what: str, record: PipelineRecord, *, actor: str = "user", depth: int = 0) -> Envelope:
        """``lead.<what>`` carrying ``record`` as its payload says it (a stage or group change: the change)."""
        payload: Any = record
        if what in ("stage_changed", "stage_group_changed"):
            payload = StageChanged(record=record, to_stage_id=record.stage_id,
                                   to_stage_group_id=record.stage_group_id, cause="user")
        elif what in ("added_to_group", "removed_from_group"):
            payload = GroupMembershipChanged(record=record, group_id=record.group_ids[-1])
        return new_envelope(f"lead.{what}", "lead", record.id, record.version, payload,
                            actor=Actor(user_id="u1", kind=actor), trigger_depth=depth, producer="leads")

    @staticmethod
    def deleted(record_id: str, version: int) -> Envelope:
        return new_envelope("lead.deleted", "lead", record_id, version, RecordDeleted(id=record_id, kind="lead"),
                            actor=Actor(user_id="u1", kind="user"), producer="leads")

    # -- what a user (or the console) would see --------------------------------------------

    def executions(self, trigger_id: str | None = None) -> list[Any]:
        stmt = select(executions).order_by(executions.c.at)
        if trigger_id:
            stmt = stmt.where(executions.c.trigger_id == trigger_id)
        with self.db.transaction() as s:
            return list(s.execute(stmt).all())

    def commands(self) -> list[tuple[str, str, Envelope]]:
        """The commands in the outbox: (topic, key, envelope), in order."""
        with self.db.transaction() as s:
            rows = s.execute(select(OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload).order_by(OUTBOX.c.id)).all()
        return [(r.topic, r.key, decode(r.payload)) for r in rows]

    def state(self, record_id: str) -> Any:
        with self.db.transaction() as s:
            return s.execute(select(record_states).where(record_states.c.id == record_id)).first()

    def schedule(self, trigger_id: str, record_id: str) -> Any:
        with self.db.transaction() as s:
            return s.execute(select(schedule).where(schedule.c.trigger_id == trigger_id,
                                                    schedule.c.record_id == record_id)).first()


@pytest.fixture(scope="session")
def template(tmp_path_factory: Any) -> tuple[Path, dict[str, str]]:
    """A database with the tables and the catalogue, made once and copied for each test."""
    where = tmp_path_factory.mktemp("triggers-template")
    path = where / "triggers.db"
    (where / "no-versions").mkdir()
    upgrade(f"sqlite:///{path}", where / "no-versions")  # the kit's own tables: the outbox among them
    database = Database(f"sqlite:///{path}")
    metadata.create_all(database.engine)  # and the service's (the kit's exist already)
    ids = World(database).ids
    database.dispose()  # the last connection closing checkpoints the WAL into the file
    return path, ids


@pytest.fixture
def db(template: tuple[Path, dict[str, str]], tmp_path: Path) -> Any:
    path = tmp_path / "triggers.db"
    shutil.copyfile(template[0], path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def world(db: Database, template: tuple[Path, dict[str, str]]) -> World:
    return World(db, dict(template[1]))

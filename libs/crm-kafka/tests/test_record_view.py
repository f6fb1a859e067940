"""A record read model keeps the newest version of each record, whatever order events come in."""

from __future__ import annotations

import pytest
from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Actor
from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_events.envelope import new_envelope
from crm_events.topics import RECORD_TOPICS
from crm_kafka.record_view import RecordView

metadata = MetaData()
plain = Table("plain", metadata, Column("id", String, primary_key=True), Column("version", Integer),
              Column("title", String))
kept = Table("kept", metadata, Column("id", String, primary_key=True), Column("version", Integer),
             Column("deleted", Boolean), Column("state", JSON))

PLAIN = RecordView(plain, lambda r, _e: {"title": r.title})
KEPT = RecordView(kept, lambda r, _e: {"state": {"title": r.title}}, tombstone=lambda _e: {"state": {}})


@pytest.fixture
def session(any_db_url):
    """On both databases: the view is kept with each one's ``INSERT ... ON CONFLICT``."""
    engine = create_engine(any_db_url)
    metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


def changed(version: int, title: str, record_id: str = "r1"):
    record = PipelineRecord(id=record_id, kind="lead", title=title, version=version)
    return new_envelope("lead.updated", "lead", record_id, version, record, actor=Actor(kind="system"))


def deleted(version: int, record_id: str = "r1"):
    return new_envelope("lead.deleted", "lead", record_id, version, RecordDeleted(id=record_id),
                        actor=Actor(kind="system"))


def rows(session, table):
    return [tuple(r) for r in session.execute(select(table).order_by(table.c.id))]


def test_newer_versions_replace_older_ones_and_late_ones_change_nothing(session):
    assert PLAIN.apply(session, changed(1, "a")).newer
    seen = PLAIN.apply(session, changed(3, "c"))
    assert (seen.stored, seen.newer, seen.record.title) == (True, True, "c")
    late = PLAIN.apply(session, changed(2, "b"))
    assert (late.stored, late.newer) == (False, False)
    again = PLAIN.apply(session, changed(3, "c"))
    assert (again.stored, again.newer) == (True, False)  # a redelivery: the same state, not news
    assert rows(session, plain) == [("r1", 3, "c")]


def test_a_deleted_record_is_forgotten_or_kept_as_a_tombstone(session):
    PLAIN.apply(session, changed(1, "a"))
    KEPT.apply(session, changed(1, "a"))
    assert PLAIN.apply(session, deleted(2)).deleted == "r1"
    KEPT.apply(session, deleted(2))
    assert rows(session, plain) == []
    assert rows(session, kept) == [("r1", 2, True, {"title": "a"})]
    assert not KEPT.apply(session, changed(5, "late")).stored  # a tombstone is never brought back
    KEPT.apply(session, deleted(4, "r2"))  # deleted before it was ever seen
    assert rows(session, kept)[1] == ("r2", 4, True, {})


def test_events_without_a_record_are_ignored_and_the_consumer_reads_the_record_topics(session):
    from crm.events.v1.probe_pb2 import Probe
    probe = new_envelope("probe.sent", "probe", "p1", 1, Probe(), actor=Actor(kind="system"))
    assert PLAIN.apply(session, probe).stored is False
    spec = PLAIN.consumer("records")
    assert (spec.name, spec.topics) == ("records", list(RECORD_TOPICS))
    spec.handler(session, changed(1, "a"))
    assert rows(session, plain) == [("r1", 1, "a")]

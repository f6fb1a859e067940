"""Bulk create's rules, fast (``POST /v1/{records}/bulk`` create and the imports share them): each
item is checked as a single create and fails alone with its errors, a key seen before answers
``exists`` with the id it made, and the records made get the same ``created`` event a single create
writes. SQLite, no Kafka, no HTTP."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from pipeline_world import ALICE, Pipeline, pending
from sqlalchemy import func, select

from crm_events.envelope import record_state
from crm_kit.bulk import IMPORT_KEY_LENGTH
from crm_pipeline.bulk import bulk_create, bulk_item_schema, importer


def run(world: Pipeline, items: list[Any], identity: Any = ALICE) -> list[dict[str, Any]]:
    with world.db.transaction() as s:
        results = bulk_create(world.records, s, identity, bulk_item_schema(world.kind), items)
        assert pending(s) == ["lead.created"] * sum(r["status"] == "created" for r in results)
    assert [r["index"] for r in results] == list(range(len(items)))
    return results


def count(world: Pipeline) -> int:
    with world.db.transaction() as s:
        return int(s.execute(select(func.count()).select_from(world.tables["records"])).scalar_one())


def test_each_item_succeeds_or_fails_alone_and_a_key_seen_before_makes_nothing_twice(leads):
    unknown = str(uuid.uuid4())
    items: list[Any] = [
        {"key": "f:1", "title": "One", "company_id": leads.ids["company"]},
        {"key": "f:2", "title": "   "},
        {"key": "f:3", "title": "Elsewhere", "office_id": "o2"},
        {"key": "f:4", "title": "Who?", "company_id": unknown},
        {"key": "f:1", "title": "One again, other words"},
        "not an object",
        {"key": "f:6", "title": "Six", "source_id": leads.ids["web"], "group_ids": [leads.ids["vip"]]},
    ]
    first = run(leads, items)
    one, six = first[0]["id"], first[6]["id"]
    assert [(r["status"], r["id"]) for r in first] == [
        ("created", one), ("error", None), ("error", None), ("error", None), ("exists", one), ("error", None),
        ("created", six)]
    assert first[1]["error"] == "title: Must not be blank."
    assert first[1]["errors"] == [{"field": "title", "message": "Must not be blank."}]
    assert first[2]["error"] == "Only an admin may put a record in another office." and "errors" not in first[2]
    assert first[3]["errors"] == [{"field": "company_id", "message": f"There is no company with id {unknown!r}."}]
    assert first[5]["errors"] == [{"field": "body", "message": "Expected an object."}]
    made = leads.published()
    assert [(e.event_type, e.aggregate_id, e.actor.user_id) for e in made] == \
        [("lead.created", one, "alice"), ("lead.created", six, "alice")]
    assert list(record_state(made[1]).group_ids) == [leads.ids["vip"]]
    assert leads.history(six) == [(None, leads.ids["new"], "bulk")]

    again = run(leads, items)  # the same rows again: nothing made twice, the same answers
    assert [(r["status"], r["id"]) for r in again] == [
        ("exists", one), ("error", None), ("error", None), ("error", None), ("exists", one), ("error", None),
        ("exists", six)]
    assert count(leads) == 2 and len(leads.published()) == 2


def test_keys_are_per_office(leads):
    [mine] = run(leads, [{"key": "k", "title": "Mine"}])
    admin = replace(ALICE, user_id="root", roles=("admin",))
    [theirs] = run(leads, [{"key": "k", "title": "Theirs", "office_id": "o2"}], identity=admin)
    assert (mine["status"], theirs["status"]) == ("created", "created") and mine["id"] != theirs["id"]


def test_an_import_uses_the_same_bulk_create_and_the_kits_key_length(leads):
    imports = importer(leads.kind, leads.tables)
    assert (imports.collection, imports.permission, imports.key_length) == ("leads", "leads:create",
                                                                             IMPORT_KEY_LENGTH)
    with leads.db.transaction() as s:
        [result] = imports.create_batch(s, ALICE, [{"key": "row:1", "title": "Imported"}])
    assert result["status"] == "created" and leads.types() == ["lead.created"]

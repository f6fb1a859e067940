"""Issue 17 (import, API side): ``POST /v1/{records}/bulk`` with ``action: create``, in the records
services' own apps, on SQLite and PostgreSQL.

Each item is checked as a single create (fields, references, the office rule) and fails alone;
the rest are made in one transaction with one ``created`` event each, the same event a single
create writes. An item's ``key`` makes a re-run create nothing twice (``exists`` with the id).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from test_pipeline_references import SELLER, auth, services  # noqa: F401 - the fixture

from crm_events.envelope import record_state

pytestmark = pytest.mark.integration
KINDS = ["leads", "opportunities"]


def _bulk(svc: Any, items: list[Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = svc.client.post(f"{svc.base}/bulk", json={"action": "create", "items": items}, headers=headers or auth())
    assert r.status_code == 200, r.json
    results = r.json["results"]
    assert [x["index"] for x in results] == list(range(len(items)))
    return list(results)


def _count(svc: Any) -> int:
    with svc.db.transaction() as s:
        return int(s.execute(select(func.count()).select_from(svc.tables["records"])).scalar_one())


def _created_events(svc: Any) -> list[Any]:
    return [e for e in svc.new_events() if e.event_type == f"{svc.kind.kind}.created"]


@pytest.mark.parametrize("name", KINDS)
def test_a_thousand_rows_with_three_bad_ones_then_the_same_rows_again(services, name):  # noqa: F811
    svc = services(name)
    ids = svc.seed(svc.kind.kind)
    company, contact = svc.file("company"), svc.file("contact")
    source = svc.put(svc.kind.kind, "sources", "WEB")
    group = svc.put(svc.kind.kind, "groups", "HOT")
    inactive = svc.put(svc.kind.kind, "sources", "OLD", active=False)
    unknown_company = str(uuid.uuid4())
    run = uuid.uuid4().hex[:8]
    rows: list[dict[str, Any]] = []
    for i in range(1000):
        row: dict[str, Any] = {"key": f"{run}:{i}", "title": f"Imported {i}", "company_id": company,
                               "contact_id": contact, "source_id": source, "group_ids": [group]}
        if svc.kind.money:
            row.update(amount="100.50", currency="EUR", probability=40)
        rows.append(row)
    rows[10] = {"key": f"{run}:10", "title": "   "}  # blank title
    rows[510] = {**rows[510], "company_id": unknown_company}
    rows[999] = {**rows[999], "source_id": inactive, "stage_id": ids["next"]}
    svc.new_events()

    results = _bulk(svc, rows[:500]) + _bulk(svc, rows[500:])
    created = [r for r in results if r["status"] == "created"]
    errors = {i: r for i, r in enumerate(results) if r["status"] == "error"}
    assert len(created) == 997 and set(errors) == {10, 510, 999}
    assert errors[10]["errors"] == [{"field": "title", "message": "Must not be blank."}]
    assert errors[10]["error"] == "title: Must not be blank."
    assert errors[510]["errors"][0]["field"] == "company_id" and unknown_company in errors[510]["error"]
    assert errors[999]["errors"][0]["field"] == "source_id" and "inactive" in errors[999]["error"]
    assert all(r["id"] is None for r in errors.values())
    assert _count(svc) == 997

    # One created event per record, as a single create writes it.
    events = _created_events(svc)
    assert sorted(e.aggregate_id for e in events) == sorted(r["id"] for r in created)
    first = svc.get(created[0]["id"])
    state = record_state(next(e for e in events if e.aggregate_id == first["id"]))
    assert (state.title, state.company_id, state.contact_id, list(state.group_ids), state.stage_id, state.version) \
        == ("Imported 0", company, contact, [group], ids["new"], 1)
    assert first["stage"]["id"] == ids["new"] and first["group_ids"] == [group] and first["source_id"] == source
    single = svc.create(title="One at a time", company_id=company, contact_id=contact, source_id=source,
                        group_ids=[group])
    [one] = _created_events(svc)
    assert (one.event_type, one.aggregate_type, one.producer, one.actor.kind, one.WhichOneof("payload")) \
        == (events[0].event_type, events[0].aggregate_type, events[0].producer, events[0].actor.kind,
            events[0].WhichOneof("payload"))
    assert one.aggregate_id == single["id"]
    history = svc.client.get(f"{svc.base}/{first['id']}/stage-history", headers=auth()).json["items"]
    assert [(h["to_stage_id"], h["cause"]) for h in history] == [(ids["new"], "bulk")]

    # The same file again: nothing new; every row that was made says so, with its id.
    again = _bulk(svc, rows[:500]) + _bulk(svc, rows[500:])
    assert [r["status"] for r in again] == ["error" if i in errors else "exists" for i in range(1000)]
    assert [r["id"] for r in again] == [r["id"] for r in results]
    assert _count(svc) == 998 and _created_events(svc) == []

    # The bad rows, corrected, are made on the next run; the others still exist.
    fixed = [dict(rows[10], title="Fixed 10"), dict(rows[510], company_id=company), rows[0]]
    third = _bulk(svc, fixed)
    assert [r["status"] for r in third] == ["created", "created", "exists"]
    assert len(_created_events(svc)) == 2


@pytest.mark.parametrize("name", KINDS)
def test_the_office_rule_and_keys_per_office(services, name):  # noqa: F811
    svc = services(name)
    svc.seed(svc.kind.kind)
    mine = {"key": "k1", "title": "Mine"}
    elsewhere = {"key": "k2", "title": "Elsewhere", "office_id": "o2"}
    results = _bulk(svc, [mine, elsewhere], SELLER)  # office o1, not an admin
    assert [r["status"] for r in results] == ["created", "error"]
    assert "admin" in results[1]["error"] and "errors" not in results[1]
    assert svc.get(results[0]["id"])["office_id"] == "o1"
    # An admin may: the key k1 is another record in office o2 (keys are per office).
    admin = _bulk(svc, [dict(mine, office_id="o2"), elsewhere, mine])
    assert [r["status"] for r in admin] == ["created", "created", "exists"]
    assert admin[2]["id"] == results[0]["id"] != admin[0]["id"]
    assert svc.get(admin[0]["id"])["office_id"] == "o2"
    # A caller of another office using the same key makes its own record.
    other = _bulk(svc, [mine], auth(("marketing", "account_manager"), user="m2", office="o3"))
    assert other[0]["status"] == "created" and other[0]["id"] not in (results[0]["id"], admin[0]["id"])


@pytest.mark.parametrize("name", KINDS)
def test_keys_repeated_in_one_call_and_items_that_fail_alone(services, name):  # noqa: F811
    svc = services(name)
    svc.seed(svc.kind.kind)
    items: list[Any] = [
        {"key": "a", "title": ""},  # bad: the next item with this key is made instead
        {"key": "a", "title": "A"},
        {"key": "a", "title": "A again"},  # exists: made by the item before
        {"key": "b", "title": "B\u0000"},  # a control character: this item only
        {"key": "c", "title": "C", "unknown": 1},
        {"title": "no key"},
        "not an object",
        {"key": "x" * 201, "title": "long key"},
        {"key": "d", "title": "D", "lead_id": str(uuid.uuid4())},
        {"key": "e", "title": "E"},
    ]
    results = _bulk(svc, items)
    assert [r["status"] for r in results] == ["error", "created", "exists", "error", "error", "error", "error",
                                              "error", "error", "created"]
    assert results[2]["id"] == results[1]["id"]
    assert {r["errors"][0]["field"] for r in (results[3], results[4], results[5], results[7], results[8])} \
        == {"title", "unknown", "key", "lead_id"}
    assert results[6]["errors"] == [{"field": "body", "message": "Expected an object."}]
    assert svc.get(results[1]["id"])["title"] == "A" and _count(svc) == 2


@pytest.mark.parametrize("name", KINDS)
def test_the_body_of_a_bulk_create(services, name):  # noqa: F811
    svc = services(name)
    svc.seed(svc.kind.kind)
    url = f"{svc.base}/bulk"

    def field(body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
        r = svc.client.post(url, json=body, headers=headers or auth())
        assert r.status_code == 422, r.json
        return str(r.json["errors"][0]["field"])

    item = {"key": "k", "title": "t"}
    assert field({"action": "create", "items": [item] * 501}) == "items"
    assert field({"action": "create", "items": []}) == "items"
    assert field({"action": "create"}) == "items"
    assert field({"action": "create", "items": [item], "ids": ["x"]}) == "ids"
    assert field({"action": "delete", "items": [item]}) == "items"
    assert field({"action": "delete"}) == "ids"
    assert field({"action": "create", "items": {"0": item}}) == "items"
    # Creating needs the create permission, whatever the route's edit permission says.
    r = svc.client.post(url, json={"action": "create", "items": [item]}, headers=auth(("viewer",)))
    assert r.status_code == 403
    # The other actions are unchanged.
    record = svc.create()
    r = svc.client.post(url, json={"ids": [record["id"]], "action": "assign_owner", "owner_id": "u9"},
                        headers=auth())
    assert r.status_code == 200 and r.json["results"] == [{"id": record["id"], "status": "ok", "error": None}]

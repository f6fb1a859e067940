"""Issue 17 (import, API side): ``POST /v1/companies/bulk`` and ``POST /v1/contacts/bulk`` in the
linking service's own app, on SQLite and PostgreSQL: each item checked as a single create and
failing alone, one ``created`` event per file, and an idempotency key per item (per office), so a
re-run creates nothing twice.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from test_linking_files import Env, auth, env  # noqa: F401 - the fixture

from crm_linking.tables import companies, contacts, import_keys

pytestmark = pytest.mark.integration


def _bulk(env: Env, collection: str, items: list[Any],  # noqa: F811
          headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = env.client.post(f"/v1/{collection}/bulk", json={"action": "create", "items": items},
                        headers=headers or auth())
    assert r.status_code == 200, r.json
    results = r.json["results"]
    assert [x["index"] for x in results] == list(range(len(items)))
    return list(results)


def test_companies_then_their_contacts_twice(env: Env) -> None:  # noqa: F811
    run = uuid.uuid4().hex[:6]
    rows = [{"key": f"{run}:c{i}", "name": f"Company {i}", "city": "Utrecht"} for i in range(300)]
    rows[7] = {"key": f"{run}:c7", "name": "Bad site", "website": "ftp://nope"}
    rows[8] = {"key": f"{run}:c8", "name": " "}
    results = _bulk(env, "companies", rows)
    assert [r["status"] for r in results].count("created") == 298
    assert results[7]["status"] == "error" and results[7]["errors"][0]["field"] == "website"
    assert results[8]["errors"] == [{"field": "name", "message": "Must not be blank."}]
    assert results[8]["error"] == "name: Must not be blank." and results[8]["id"] is None
    assert env.count(companies) == 298
    created = [e for e in env.events("linking.company.created")]
    assert sorted(e.aggregate_id for e in created) == sorted(r["id"] for r in results if r["status"] == "created")
    first = env.client.get(f"/v1/companies/{results[0]['id']}", headers=auth()).json
    assert (first["name"], first["city"], first["version"]) == ("Company 0", "Utrecht", 1)
    assert "key" not in dict(created[0].linking_change.data) and "import_key" not in first

    # Contacts naming the companies just made (and one that does not exist).
    people = [{"key": f"{run}:p{i}", "first_name": "Ann", "last_name": f"P{i}",
               "company_id": results[i % 5]["id"]} for i in range(20)]
    people[3] = {**people[3], "company_id": str(uuid.uuid4())}
    people[4] = {**people[4], "email": "not-an-email"}
    made = _bulk(env, "contacts", people)
    assert [r["status"] for r in made] == ["error" if i in (3, 4) else "created" for i in range(20)]
    assert made[3]["errors"][0]["field"] == "company_id" and "There is no company" in made[3]["error"]
    assert made[4]["errors"][0]["field"] == "email"
    assert env.count(contacts) == 18

    # The same files again: nothing new, the same ids.
    events = len(env.events())
    again = _bulk(env, "companies", rows)
    assert [r["status"] for r in again] == ["error" if i in (7, 8) else "exists" for i in range(300)]
    assert [r["id"] for r in again] == [r["id"] for r in results]
    assert [r["id"] for r in _bulk(env, "contacts", people)] == [r["id"] for r in made]
    assert env.count(companies) == 298 and env.count(contacts) == 18 and len(env.events()) == events


def test_keys_are_per_office_repeat_in_a_call_and_free_again_after_a_delete(env: Env) -> None:  # noqa: F811
    items: list[Any] = [{"key": "a", "name": ""}, {"key": "a", "name": "A"}, {"key": "a", "name": "A2"},
                        {"key": "b", "name": "B", "unknown": 1}, "nope", {"name": "no key"},
                        {"key": "c", "name": "C\u0000"}, {"key": "d", "name": "D"}]
    results = _bulk(env, "companies", items)
    assert [r["status"] for r in results] == ["error", "created", "exists", "error", "error", "error", "error",
                                              "created"]
    assert results[2]["id"] == results[1]["id"]
    assert [r["errors"][0]["field"] for r in (results[3], results[4], results[5], results[6])] \
        == ["unknown", "body", "key", "name"]
    # Another office's key "a" is its own.
    other = _bulk(env, "companies", [{"key": "a", "name": "A of o2"}], auth(("marketing",), user="m2", office="o2"))
    assert other[0]["status"] == "created" and other[0]["id"] != results[1]["id"]
    # A deleted company's key makes a new one.
    assert env.client.delete(f"/v1/companies/{results[1]['id']}", headers=auth()).status_code == 204
    again = _bulk(env, "companies", [{"key": "a", "name": "A"}, {"key": "d", "name": "D"}])
    assert again[0]["status"] == "created" and again[0]["id"] != results[1]["id"]
    assert again[1] == {**results[7], "index": 1, "status": "exists"}
    assert env.count(import_keys) == 3  # a, d (o1), a (o2): the stale a was replaced


def test_the_body_and_the_permission(env: Env) -> None:  # noqa: F811
    def field(body: dict[str, Any]) -> str:
        r = env.client.post("/v1/contacts/bulk", json=body, headers=auth())
        assert r.status_code == 422, r.json
        return str(r.json["errors"][0]["field"])

    item = {"key": "k", "first_name": "A", "last_name": "B"}
    assert field({"action": "create", "items": [item] * 501}) == "items"
    assert field({"action": "create", "items": []}) == "items"
    assert field({"action": "delete", "items": [item]}) == "action"
    assert field({"items": [item]}) == "action"
    r = env.client.post("/v1/contacts/bulk", json={"action": "create", "items": [item]}, headers=auth(("viewer",)))
    assert r.status_code == 403

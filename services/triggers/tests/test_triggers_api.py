"""The triggers API through the service's own app, on SQLite and PostgreSQL.

The catalogue copy is fed with real catalogue events (as the worker would); executions and
schedule rows are inserted directly, as the engine and scheduler would write them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import insert, select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import new_envelope
from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token
from crm_triggers.api import build_triggers_api
from crm_triggers.tables import executions, schedule

pytestmark = pytest.mark.integration
SECRET = "triggers-test-secret-long-enough-for-hs256"


def auth(roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id="u1", name="U1", office_id="o1",
                                                     roles=list(roles))}


def put(db: Database, kind: str, entity: str, code: str, *, active: bool = True, **attributes: Any) -> str:
    entry_id = str(uuid.uuid4())
    attrs = Struct()
    attrs.update(attributes)
    entry = CatalogueEntry(id=entry_id, kind=kind, entity=entity, code=code, names={"en": code}, index=0,
                           active=active, version=1, attributes=attrs)
    with db.transaction() as s:
        apply_catalogue_event(s, new_envelope(f"catalogue.{'stage' if entity == 'stage' else 'table_entry'}"
                                              ".updated", entity, entry_id, 1, entry))
    return entry_id


def seed(db: Database, kind: str) -> dict[str, str]:
    ids = {"open": put(db, kind, "stage_groups", "OPEN"), "closed": put(db, kind, "stage_groups", "CLOSED")}
    ids["new"] = put(db, kind, "stage", "NEW", stage_group_id=ids["open"])
    ids["next"] = put(db, kind, "stage", "NEXT", stage_group_id=ids["open"])
    ids["won"] = put(db, kind, "stage", "WON", stage_group_id=ids["closed"])
    ids["old"] = put(db, kind, "stage", "OLD", active=False, stage_group_id=ids["closed"])
    ids["vip"] = put(db, kind, "groups", "VIP")
    ids["hot"] = put(db, kind, "groups", "HOT")
    ids["web"] = put(db, kind, "sources", "WEB")
    ids["gone"] = put(db, kind, "sources", "GONE", active=False)
    return ids


@pytest.fixture
def env(any_db_url: str) -> Any:
    spec = find_service("triggers")
    settings = load_settings("domain", {"CRM_SERVICE_NAME": "triggers", "CRM_DATABASE_URL": any_db_url,
                                        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET})
    migrate(spec, settings)
    app = spec.build_app(settings)
    if "/v1/triggers" not in {r.rule for r in app.extensions.get("crm_routes", [])}:
        build_triggers_api().register(app)
    db = Database(any_db_url)
    yield app.test_client(), db, seed(db, "lead"), seed(db, "opportunity")
    db.dispose()


def trigger(name: str, event: dict[str, Any], *actions: dict[str, Any], kind: str = "lead",
            **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "event": event, "actions": list(actions), **extra}


def test_crud_etag_and_listing(env):
    c, db, lead, opp = env
    body = trigger("Welcome", {"type": "created"}, {"type": "add_to_group", "group_id": lead["vip"]},
                   conditions={"source_id": lead["web"], "owner_id": "u7"})
    r = c.post("/v1/triggers", json=body, headers=auth())
    assert r.status_code == 201, r.json
    t = r.json
    assert t["active"] is True and t["version"] == 1 and t["warnings"] == [] and t["created_by"] == "u1"
    assert t["conditions"] == {"source_id": lead["web"], "owner_id": "u7"} and t["created_at"].endswith("Z")
    assert r.headers["Location"] == f"/v1/triggers/{t['id']}"
    url = f"/v1/triggers/{t['id']}"
    r = c.get(url, headers=auth())
    assert r.status_code == 200 and r.headers["ETag"] == '"1"' and "warnings" not in r.json
    assert r.json["event"] == {"type": "created"}

    c.post("/v1/triggers", json=trigger("Aging", {"type": "not_modified_for", "seconds": 3600},
                                        {"type": "set_stage", "stage_id": opp["next"]}, kind="opportunity",
                                        conditions={"lead_id": "l1"}, active=False), headers=auth())
    c.post("/v1/triggers", json=trigger("Big", {"type": "stage_changed", "stage_id": lead["won"]},
                                        {"type": "remove_from_group", "group_id": lead["vip"]}), headers=auth())
    names = [x["name"] for x in c.get("/v1/triggers", headers=auth()).json["items"]]
    assert names == ["Aging", "Big", "Welcome"]
    assert [x["name"] for x in c.get("/v1/triggers?kind=lead", headers=auth()).json["items"]] == ["Big", "Welcome"]
    assert [x["name"] for x in c.get("/v1/triggers?active=false", headers=auth()).json["items"]] == ["Aging"]
    first = c.get("/v1/triggers?page_size=2", headers=auth()).json
    rest = c.get(f"/v1/triggers?page_size=2&page_token={first['next_page_token']}", headers=auth()).json
    assert [x["name"] for x in first["items"] + rest["items"]] == names and rest["next_page_token"] is None

    # PATCH replaces the definition's parts whole; If-Match mismatch changes nothing.
    r = c.patch(url, json={"name": "Renamed"}, headers={**auth(), "If-Match": '"7"'})
    assert r.status_code == 412
    r = c.patch(url, json={"name": "Renamed", "conditions": {}, "actions": [
        {"type": "set_stage", "stage_id": lead["next"]}]}, headers={**auth(), "If-Match": '"1"'})
    assert r.status_code == 200, r.json
    assert r.json["version"] == 2 and r.json["conditions"] == {} and r.json["name"] == "Renamed"
    assert r.json["actions"] == [{"type": "set_stage", "stage_id": lead["next"]}] and r.headers["ETag"] == '"2"'
    assert c.patch(url, json={"kind": "lead"}, headers=auth()).status_code == 200
    r = c.patch(url, json={"kind": "opportunity"}, headers=auth())
    assert r.status_code == 422 and {k: r.json[k] for k in ("type", "title", "status", "detail", "errors")} == {
        "type": "https://crm.example/problems/validation-error", "title": "Unprocessable Content", "status": 422,
        "detail": "A trigger's kind cannot change; create a new trigger instead.",
        "errors": [{"field": "kind", "message": "Cannot change."}]}
    assert c.get(url, headers=auth()).json["version"] == 3

    assert c.delete(url, headers={**auth(), "If-Match": '"1"'}).status_code == 412
    assert c.delete(url, headers={**auth(), "If-Match": '"3"'}).status_code == 204
    r = c.get(url, headers=auth())
    assert (r.status_code, r.json["type"], r.json["title"], r.json["detail"]) == (
        404, "https://crm.example/problems/not-found", "Not Found", f"No trigger with id {t['id']!r}.")
    assert c.patch(url, json={"name": "x"}, headers=auth()).status_code == 404
    assert c.delete(url, headers=auth()).status_code == 404


def _field(r: Any) -> list[str]:
    assert r.status_code == 422, r.json
    return [e["field"] for e in r.json["errors"]]


def test_validation(env):
    c, db, lead, opp = env
    ok_action = {"type": "add_to_group", "group_id": lead["vip"]}

    def post(body: dict[str, Any]) -> Any:
        return c.post("/v1/triggers", json=body, headers=auth())

    assert _field(post(trigger("x", {"type": "exploded"}, ok_action))) == ["event.type"]
    assert _field(post(trigger("x", {"type": "stage_changed"}, ok_action))) == ["event.stage_id"]
    assert _field(post(trigger("x", {"type": "created", "stage_id": lead["new"]}, ok_action))) == ["event.stage_id"]
    assert _field(post(trigger("x", {"type": "not_modified_for", "seconds": 0}, ok_action))) == ["event.seconds"]
    assert _field(post(trigger("x", {"type": "not_modified_for", "seconds": 31536001}, ok_action))) == [
        "event.seconds"]
    assert _field(post(trigger("x", "created", ok_action))) == ["event"]
    assert _field(post(trigger("x", {"type": "created"}))) == ["actions"]
    assert _field(post(trigger("x", {"type": "created"}, *[ok_action] * 11))) == ["actions"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, {"type": "set_stage"}))) == [
        "actions.1.stage_id"]
    assert _field(post(trigger("x", {"type": "created"}, {"type": "set_stage", "stage_id": lead["new"],
                                                          "group_id": lead["vip"]}))) == ["actions.0.group_id"]
    assert _field(post(trigger("x", {"type": "created"}, {"type": "delete"}))) == ["actions.0.type"]
    assert _field(post(trigger("", {"type": "created"}, ok_action))) == ["name"]
    assert _field(post(trigger("x" * 201, {"type": "created"}, ok_action))) == ["name"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, kind="file"))) == ["kind"]
    assert _field(post({"name": "x", "event": {"type": "created"}, "actions": [ok_action]})) == ["kind"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, colour="red"))) == ["colour"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, active="yes"))) == ["active"]
    # Conditions: only list filters, string values, lead_id only for opportunities.
    assert _field(post(trigger("x", {"type": "created"}, ok_action, conditions={"title": "a"}))) == [
        "conditions.title.key"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, conditions={"owner_id": 5}))) == [
        "conditions.owner_id.value"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, conditions={"lead_id": "l1"}))) == [
        "conditions.lead_id"]
    # Catalogue ids: of the trigger's kind, of the right table, active.
    assert _field(post(trigger("x", {"type": "stage_changed", "stage_id": opp["won"]}, ok_action))) == [
        "event.stage_id"]
    assert _field(post(trigger("x", {"type": "stage_changed", "stage_id": lead["old"]}, ok_action))) == [
        "event.stage_id"]
    assert _field(post(trigger("x", {"type": "added_to_group", "group_id": lead["web"]}, ok_action))) == [
        "event.group_id"]
    assert _field(post(trigger("x", {"type": "stage_group_changed", "stage_group_id": "nope"}, ok_action))) == [
        "event.stage_group_id"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, {"type": "set_stage", "stage_id": lead["old"]},
                               {"type": "remove_from_group", "group_id": opp["vip"]}))) == [
        "actions.1.stage_id", "actions.2.group_id"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, conditions={"source_id": lead["gone"]}))) == [
        "conditions.source_id"]
    assert _field(post(trigger("x", {"type": "created"}, ok_action, conditions={"stage_group_id": opp["open"]}))) == [
        "conditions.stage_group_id"]
    assert c.get("/v1/triggers", headers=auth()).json["items"] == []
    # PATCH re-validates what it replaces.
    t = post(trigger("ok", {"type": "created"}, ok_action)).json
    r = c.patch(f"/v1/triggers/{t['id']}", json={"event": {"type": "added_to_group", "group_id": opp["vip"]}},
                headers=auth())
    assert _field(r) == ["event.group_id"]
    assert _field(c.patch(f"/v1/triggers/{t['id']}", json={"actions": []}, headers=auth())) == ["actions"]
    assert _field(c.patch(f"/v1/triggers/{t['id']}", json={"name": None}, headers=auth())) == ["name"]
    assert c.get(f"/v1/triggers/{t['id']}", headers=auth()).json["version"] == 1


def test_permissions(env):
    c, db, lead, opp = env
    body = trigger("x", {"type": "created"}, {"type": "add_to_group", "group_id": lead["vip"]})
    t = c.post("/v1/triggers", json=body, headers=auth()).json
    calls = [("post", "/v1/triggers", body), ("get", "/v1/triggers", None), ("get", f"/v1/triggers/{t['id']}", None),
             ("patch", f"/v1/triggers/{t['id']}", {"name": "y"}), ("delete", f"/v1/triggers/{t['id']}", None),
             ("get", f"/v1/triggers/{t['id']}/executions", None), ("get", "/v1/trigger-executions?record_id=r",
                                                                   None)]
    for method, url, json in calls:
        for roles in (("marketing",), ("account_manager",), ("viewer",)):
            r = getattr(c, method)(url, json=json, headers=auth(roles))
            assert r.status_code == 403, (method, url, roles)
        assert getattr(c, method)(url, json=json).status_code == 401
    assert c.get(f"/v1/triggers/{t['id']}", headers=auth()).json["name"] == "x"


def test_loop_warnings(env):
    c, db, lead, opp = env

    def post(body: dict[str, Any]) -> dict[str, Any]:
        r = c.post("/v1/triggers", json=body, headers=auth())
        assert r.status_code == 201, r.json
        return r.json

    # Ping-pong between two stages.
    a = post(trigger("A", {"type": "stage_changed", "stage_id": lead["new"]},
                     {"type": "set_stage", "stage_id": lead["next"]}))
    assert a["warnings"] == []
    b = post(trigger("B", {"type": "stage_changed", "stage_id": lead["next"]},
                     {"type": "set_stage", "stage_id": lead["new"]}))
    assert b["warnings"] == ["These triggers call each other in a loop: 'B' -> 'A' -> 'B'; the chain stops at "
                             "depth 5 and is logged skipped_loop."]
    # ?validate_only=true answers the same warnings (and 422s) before saving, and saves nothing.
    probe = trigger("C", {"type": "stage_changed", "stage_id": lead["next"]},
                    {"type": "set_stage", "stage_id": lead["new"]})
    r = c.post("/v1/triggers?validate_only=true", json=probe, headers=auth())
    assert r.status_code == 200 and "Location" not in r.headers, r.json
    assert r.json["warnings"] and "'A' -> " in r.json["warnings"][0] and "id" not in r.json
    assert c.post("/v1/triggers?validate_only=true", json={**probe, "active": False},
                  headers=auth()).json["warnings"] == []
    bad = {**probe, "actions": [{"type": "set_stage", "stage_id": opp["new"]}]}
    assert _field(c.post("/v1/triggers?validate_only=true", json=bad, headers=auth())) == ["actions.0.stage_id"]
    assert len(c.get("/v1/triggers", headers=auth()).json["items"]) == 2
    # An edit of A that breaks the loop: no warning, and A is unchanged (no If-Match needed to ask).
    r = c.patch(f"/v1/triggers/{a['id']}?validate_only=true",
                json={"actions": [{"type": "add_to_group", "group_id": lead["vip"]}]}, headers=auth())
    assert r.status_code == 200 and r.json["warnings"] == []
    assert c.get(f"/v1/triggers/{a['id']}", headers=auth()).json["version"] == 1
    # The same actions on opportunities are another world: no loop across kinds.
    assert post(trigger("O", {"type": "stage_changed", "stage_id": opp["next"]},
                        {"type": "set_stage", "stage_id": opp["new"]}, kind="opportunity"))["warnings"] == []
    # Deactivating one breaks the loop; re-activating reports it again.
    r = c.patch(f"/v1/triggers/{a['id']}", json={"active": False}, headers=auth())
    assert r.json["warnings"] == []
    assert c.patch(f"/v1/triggers/{b['id']}", json={"name": "B2"}, headers=auth()).json["warnings"] == []
    r = c.patch(f"/v1/triggers/{a['id']}", json={"active": True}, headers=auth())
    assert r.json["warnings"] and "'A' -> 'B2' -> 'A'" in r.json["warnings"][0]
    # A stage group event caused by a stage in that group; a three-step chain.
    c.delete(f"/v1/triggers/{b['id']}", headers=auth())
    c.delete(f"/v1/triggers/{a['id']}", headers=auth())
    g = post(trigger("G", {"type": "stage_group_changed", "stage_group_id": lead["open"]},
                     {"type": "add_to_group", "group_id": lead["hot"]}))
    assert g["warnings"] == []
    h = post(trigger("H", {"type": "added_to_group", "group_id": lead["hot"]},
                     {"type": "remove_from_group", "group_id": lead["vip"]},
                     {"type": "set_stage", "stage_id": lead["won"]}))
    assert h["warnings"] == []
    w = post(trigger("W", {"type": "stage_changed", "stage_id": lead["won"]},
                     {"type": "set_stage", "stage_id": lead["new"]}))
    assert w["warnings"] == ["These triggers call each other in a loop: 'W' -> 'G' -> 'H' -> 'W'; the chain "
                             "stops at depth 5 and is logged skipped_loop."]
    # add_to_group -> added_to_group between two triggers.
    x = post(trigger("X", {"type": "added_to_group", "group_id": lead["vip"]},
                     {"type": "add_to_group", "group_id": lead["hot"]}))
    assert x["warnings"] == []
    y = post(trigger("Y", {"type": "added_to_group", "group_id": lead["hot"]},
                     {"type": "add_to_group", "group_id": lead["vip"]}))
    assert y["warnings"] == ["These triggers call each other in a loop: 'Y' -> 'X' -> 'Y'; the chain stops at "
                             "depth 5 and is logged skipped_loop."]
    # A trigger re-applying its own event changes nothing; moving away first and back loops.
    assert post(trigger("Same", {"type": "stage_group_changed", "stage_group_id": opp["closed"]},
                        {"type": "set_stage", "stage_id": opp["won"]}, kind="opportunity"))["warnings"] == []
    back = post(trigger("Back", {"type": "added_to_group", "group_id": opp["vip"]},
                        {"type": "remove_from_group", "group_id": opp["vip"]},
                        {"type": "add_to_group", "group_id": opp["vip"]}, kind="opportunity"))
    assert "'Back' -> 'Back'" in back["warnings"][0]


def test_executions_and_schedule(env):
    c, db, lead, opp = env
    body = trigger("Aging", {"type": "not_modified_for", "seconds": 3600},
                   {"type": "set_stage", "stage_id": lead["next"]})
    t1 = c.post("/v1/triggers", json=body, headers=auth()).json
    t2 = c.post("/v1/triggers", json={**body, "name": "Other"}, headers=auth()).json
    start = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
    rows = []
    for i, (tid, rid, result) in enumerate([(t1["id"], "r1", "applied"), (t1["id"], "r2", "failed"),
                                            (t2["id"], "r1", "skipped_loop"), (t1["id"], "r1", "applied")]):
        rows.append({"id": f"e{i}", "trigger_id": tid, "record_id": rid, "kind": "lead", "event_id": f"ev{i}",
                     "actions": [{"type": "set_stage", "stage_id": lead["next"], "command_id": f"c{i}"}],
                     "result": result, "reason": "Stage is inactive." if result == "failed" else None,
                     "trigger_depth": i, "event_at": start, "at": start + dt.timedelta(minutes=i)})
    with db.transaction() as s:
        s.execute(insert(executions), rows)
        s.execute(insert(schedule), [
            {"trigger_id": t1["id"], "record_id": r, "kind": "lead", "armed_at": start,
             "due_at": start + dt.timedelta(hours=1), "fired_at": fired}
            for r, fired in (("r1", None), ("r2", start), ("r3", None))])

    items = c.get(f"/v1/triggers/{t1['id']}/executions", headers=auth()).json["items"]
    assert [x["id"] for x in items] == ["e3", "e1", "e0"]
    assert items[1] == {"id": "e1", "trigger_id": t1["id"], "record_id": "r2", "event_id": "ev1",
                        "actions": rows[1]["actions"], "result": "failed", "reason": "Stage is inactive.",
                        "trigger_depth": 1, "event_at": "2026-11-23T10:00:00Z", "at": "2026-11-23T10:01:00Z"}
    page = c.get(f"/v1/triggers/{t1['id']}/executions?page_size=2", headers=auth()).json
    more = c.get(f"/v1/triggers/{t1['id']}/executions?page_size=2&page_token={page['next_page_token']}",
                 headers=auth()).json
    assert [x["id"] for x in page["items"] + more["items"]] == ["e3", "e1", "e0"]
    assert c.get("/v1/triggers/nope/executions", headers=auth()).status_code == 404
    r = c.get("/v1/trigger-executions?record_id=r1", headers=auth())
    assert [x["id"] for x in r.json["items"]] == ["e3", "e2", "e0"] and r.json["items"][1]["result"] == "skipped_loop"
    assert c.get("/v1/trigger-executions?record_id=none", headers=auth()).json["items"] == []
    everything = c.get("/v1/trigger-executions", headers=auth()).json["items"]
    assert [x["id"] for x in everything] == ["e3", "e2", "e1", "e0"]
    r = c.get(f"/v1/trigger-executions?record_id=r1&trigger_id={t1['id']}&result=applied", headers=auth())
    assert [x["id"] for x in r.json["items"]] == ["e3", "e0"]
    r = c.get(f"/v1/triggers/{t1['id']}/executions?result=failed", headers=auth())
    assert [x["id"] for x in r.json["items"]] == ["e1"]
    assert _field(c.get("/v1/trigger-executions?result=maybe", headers=auth())) == ["result"]
    # A token of one record's list is not valid for another's.
    token = c.get("/v1/trigger-executions?record_id=r1&page_size=1", headers=auth()).json["next_page_token"]
    assert c.get(f"/v1/trigger-executions?record_id=r2&page_token={token}", headers=auth()).status_code == 422

    def due() -> list[tuple[str, Any]]:
        with db.transaction() as s:
            return sorted((r.record_id, r.due_at) for r in s.execute(
                select(schedule).where(schedule.c.trigger_id == t1["id"], schedule.c.fired_at.is_(None))))

    # A longer wait moves what is due; deactivating drops it (fired rows stay); deleting drops all.
    c.patch(f"/v1/triggers/{t1['id']}", json={"event": {"type": "not_modified_for", "seconds": 7200}}, headers=auth())
    assert due() == [("r1", start + dt.timedelta(hours=2)), ("r3", start + dt.timedelta(hours=2))]
    c.patch(f"/v1/triggers/{t1['id']}", json={"active": False}, headers=auth())
    assert due() == []
    with db.transaction() as s:
        assert [r.record_id for r in s.execute(select(schedule).where(schedule.c.trigger_id == t1["id"]))] == ["r2"]
    assert c.delete(f"/v1/triggers/{t1['id']}", headers=auth()).status_code == 204
    with db.transaction() as s:
        assert s.execute(select(schedule).where(schedule.c.trigger_id == t1["id"])).all() == []
    # The log outlives the trigger: still listed per record.
    assert len(c.get("/v1/trigger-executions?record_id=r1", headers=auth()).json["items"]) == 3

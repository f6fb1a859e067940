"""Leads and opportunities through each service's own app, on SQLite and PostgreSQL.

The services' catalogue copies are fed with real catalogue events (as their workers would),
and every outbox row the records service writes is decoded and checked.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.records_pb2 import RecordCommand
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope, record_state
from crm_kafka.outbox import OUTBOX
from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.errors import ChangedMeanwhile
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token
from crm_leads.kind import LEAD
from crm_opportunities.kind import OPPORTUNITY
from crm_pipeline.commands import command_handler
from crm_pipeline.conversion import conversion_handler
from crm_pipeline.records import Records

pytestmark = pytest.mark.integration
SECRET = "records-test-secret-long-enough-for-hs256"


def auth(roles=("admin",), user="u1", office="o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id=user, name=user.upper(), office_id=office,
                                                     roles=list(roles))}


class Catalogue:
    """Feeds a service's catalogue copy with catalogue events."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, kind: str, entity: str, code: str, *, entry_id: str | None = None, active: bool = True,
            index: int = 0, version: int = 1, **attributes: Any) -> str:
        entry_id = entry_id or str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        entry = CatalogueEntry(id=entry_id, kind=kind, entity=entity, code=code, names={"en": code.title(),
                                                                                        "nl": f"{code} (nl)"},
                               index=index, active=active, version=version, attributes=attrs)
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope(f"catalogue.{'stage' if entity == 'stage' else 'table_entry'}"
                                                  ".updated", entity, entry_id, version, entry))
        return entry_id


def migrated(name: str, url: str) -> tuple[Any, Any, Database]:
    """The records service ``name`` migrated on ``url``: its spec, its app and its database."""
    spec = find_service(name)
    settings = load_settings("domain", {"CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": url,
                                        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET})
    migrate(spec, settings)
    return spec, spec.build_app(settings), Database(url)


def records_of(spec: Any, kind: Any) -> Records:
    """The service's Records, as its worker builds them."""
    return Records(kind, {k: spec.metadata.tables[t] for k, t in (
        ("records", kind.plural), ("stage_history", "stage_history"), ("record_groups", "record_groups"))})


@pytest.fixture
def service(any_db_url):
    def make(name: str):
        _, app, db = migrated(name, any_db_url)
        return app.test_client(), db
    return make


def seed(cat: Catalogue, kind: str) -> dict[str, str]:
    ids = {"open": cat.put(kind, "stage_groups", "OPEN"), "closed": cat.put(kind, "stage_groups", "CLOSED")}
    ids["new"] = cat.put(kind, "stage", "NEW", index=1, is_default=True, stage_group_id=ids["open"], color="#00AA00")
    ids["next"] = cat.put(kind, "stage", "NEXT", index=2, stage_group_id=ids["open"])
    ids["won"] = cat.put(kind, "stage", "WON", index=3, is_end=True, is_default_end=True,
                         stage_group_id=ids["closed"], remarks="Done.")
    ids["old"] = cat.put(kind, "stage", "OLD", index=4, active=False, stage_group_id=ids["closed"])
    ids["web"] = cat.put(kind, "sources", "WEB")
    ids["vip"] = cat.put(kind, "groups", "VIP")
    return ids


def events(db: Database) -> list:
    with db.transaction() as s:
        return [decode(p) for p in s.execute(select(OUTBOX.c.payload).order_by(OUTBOX.c.id)).scalars()]


@pytest.mark.parametrize("name,kind", [("leads", LEAD), ("opportunities", OPPORTUNITY)])
def test_records_lifecycle(service, name, kind):
    c, db = service(name)
    base = f"/v1/{name}"
    r = c.post(base, json={"title": "No stages yet"}, headers=auth())
    assert r.status_code == 409 and "default" in r.json["detail"]

    cat = Catalogue(db)
    ids = seed(cat, kind.kind)
    other = seed(cat, "opportunity" if kind is LEAD else "lead")

    # Create: default stage, shown with its name, colour and group; references validated.
    r = c.post(base, json={"title": "Acme", "source_id": ids["web"], "group_ids": [ids["vip"]]},
               headers={**auth(), "Accept-Language": "nl"})
    assert r.status_code == 201, r.json
    rec = r.json
    assert rec["stage"] == {"id": ids["new"], "name": "NEW (nl)", "code": "NEW", "color": "#00AA00",
                            "is_end": False, "remarks": None}
    assert rec["stage_group_id"] == ids["open"] and rec["group_ids"] == [ids["vip"]]
    for bad in ({"source_id": other["web"]}, {"stage_id": ids["old"]}, {"source_id": ids["vip"]},
                {"group_ids": ["nope"]}):
        r = c.post(base, json={"title": "Bad", **bad}, headers=auth())
        assert r.status_code == 422, (bad, r.json)
    # Stage change: history with its cause, stage_changed and stage_group_changed.
    url = f"{base}/{rec['id']}"
    r = c.patch(url, json={"stage_id": ids["won"], "title": "Acme BV"}, headers={**auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.json["version"] == 2 and r.json["stage"]["is_end"] is True
    history = c.get(f"{url}/stage-history", headers=auth()).json["items"]
    assert [(h["from_stage_id"], h["to_stage_id"], h["cause"]) for h in history] == [
        (None, ids["new"], "user"), (ids["new"], ids["won"], "user")]
    # Groups.
    assert c.delete(f"{url}/groups/{ids['vip']}", headers=auth()).status_code == 204
    assert c.delete(f"{url}/groups/{ids['vip']}", headers=auth()).status_code == 404
    assert c.post(f"{url}/groups", json={"group_id": ids["vip"]}, headers=auth()).status_code == 201
    again = c.post(f"{url}/groups", json={"group_id": ids["vip"]}, headers=auth())
    assert again.status_code == 200 and again.json["group_ids"] == [ids["vip"]]  # already a member
    # The event of a second group carries both, in the order every other event lists them.
    cold = cat.put(kind.kind, "groups", "COLD", entry_id="00000000-0000-4000-8000-000000000000")  # sorts first
    assert c.post(f"{url}/groups", json={"group_id": cold}, headers=auth()).status_code == 201
    added = [e for e in events(db) if e.event_type == kind.event_type("added_to_group")][-1]
    assert list(record_state(added).group_ids) == sorted([ids["vip"], cold])
    assert c.get(url, headers=auth()).json["group_ids"] == sorted([ids["vip"], cold])
    assert c.delete(f"{url}/groups/{cold}", headers=auth()).status_code == 204
    documented = c.get("/openapi.json").json["paths"][f"{base}/{{record_id}}/groups"]["post"]["responses"]
    assert {"200", "201"} <= set(documented)
    # Copy and bulk.
    copy = c.post(f"{url}/copy", json={"title": "Copy"}, headers=auth()).json
    assert copy["stage"]["id"] == ids["new"] and copy["source_id"] == ids["web"] and copy["group_ids"] == [ids["vip"]]
    r = c.post(f"{base}/bulk", json={"ids": [copy["id"], "missing", rec["id"]], "action": "set_stage",
                                     "stage_id": ids["next"]}, headers=auth())
    assert [x["status"] for x in r.json["results"]] == ["ok", "error", "ok"]
    assert c.get(f"{base}/{copy['id']}/stage-history", headers=auth()).json["items"][-1]["cause"] == "bulk"
    # Lists: search, filter, order, views, overview.
    c.post(base, json={"title": "Other office", "office_id": "o2"}, headers=auth())
    assert [x["title"] for x in c.get(f"{base}?q=acme", headers=auth()).json["items"]] == ["Acme BV"]
    f = f'stage_id = "{ids["next"]}" AND NOT title = "Copy"'
    assert [x["title"] for x in c.get(base, query_string={"filter": f}, headers=auth()).json["items"]] == ["Acme BV"]
    bad = c.get(base, query_string={"filter": "title = "}, headers=auth())
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "filter"
    titles = [x["title"] for x in c.get(f"{base}?order_by=title", headers=auth()).json["items"]]
    assert titles == sorted(titles)
    assert c.get(f"{base}?view=office", headers=auth()).json["items"].__len__() == 2
    assert len(c.get(base, headers=auth(roles=("viewer",), office="o2")).json["items"]) == 1
    assert c.get(url, headers=auth(roles=("viewer",), office="o2")).status_code == 404
    overview = c.get(f"{base}/overview", headers=auth()).json
    assert overview["all"] == 3 and {g["id"]: g["count"] for g in overview["stage_groups"]}[ids["open"]] == 3
    # Delete.
    assert c.delete(url, headers={**auth(), "If-Match": '"1"'}).status_code == 412
    assert c.delete(url, headers=auth()).status_code == 204
    types = [e.event_type for e in events(db)]
    for what in ("created", "updated", "stage_changed", "stage_group_changed", "added_to_group",
                 "removed_from_group", "deleted"):
        assert kind.event_type(what) in types, what
    db.dispose()


def test_conversion_saga_and_commands(service, any_db_url, request):
    leads, leads_db = service("leads")
    cat = Catalogue(leads_db)
    lead_ids, opp_ids = seed(cat, "lead"), seed(cat, "opportunity")
    lead = leads.post("/v1/leads", json={"title": "Convert me"}, headers=auth()).json
    r = leads.post(f"/v1/leads/{lead['id']}/convert", json={"amount": "1200.50", "source_id": lead_ids["web"]},
                   headers=auth())
    assert r.status_code == 422  # a lead source is not an opportunity source
    r = leads.post(f"/v1/leads/{lead['id']}/convert", json={"amount": "1200.50", "probability": 40},
                   headers=auth())
    assert r.status_code == 201, r.json
    opportunity_id = r.json["opportunity"]["id"]
    assert r.json["lead"]["stage"]["id"] == lead_ids["won"]
    assert r.json["lead"]["converted_opportunity_id"] == opportunity_id
    assert leads.post(f"/v1/leads/{lead['id']}/convert", json={}, headers=auth()).status_code == 409
    converted = [e for e in events(leads_db) if e.event_type == "lead.converted"]
    assert len(converted) == 1 and converted[0].lead_converted.opportunity.id == opportunity_id

    # Step 2 in the opportunities service (its own database): applied twice, created once.
    opps_url = (any_db_url + "_opps" if any_db_url.startswith("sqlite")
                else request.getfixturevalue("postgres").create_database("opps_" + uuid.uuid4().hex[:8]))
    spec, _, opps_db = migrated("opportunities", opps_url)
    Catalogue(opps_db)  # its copy may lag behind: conversion must not depend on it
    records = records_of(spec, OPPORTUNITY)
    handle = conversion_handler(records)
    for _ in range(2):
        with opps_db.transaction() as s:
            handle(s, converted[0])
    with opps_db.transaction() as s:
        rows = s.execute(select(records.table)).all()
    assert len(rows) == 1 and rows[0].id == opportunity_id and rows[0].lead_id == lead["id"]
    assert str(rows[0].amount) == "1200.50" and rows[0].probability == 40 and rows[0].stage_id == opp_ids["new"]

    # A trigger's command: cause and depth reach the history and the events.
    lead_records = Records(LEAD, {k: find_service("leads").metadata.tables[t] for k, t in (
        ("records", "leads"), ("stage_history", "stage_history"), ("record_groups", "record_groups"))})
    other = leads.post("/v1/leads", json={"title": "Automate me"}, headers=auth()).json
    command = new_envelope("lead.command.set_stage", "lead", other["id"], 0,
                           RecordCommand(record_id=other["id"], kind="lead", action="set_stage",
                                         stage_id=lead_ids["next"], trigger_id="t1"), trigger_depth=2)
    with leads_db.transaction() as s:
        command_handler(lead_records)(s, command)
    history = leads.get(f"/v1/leads/{other['id']}/stage-history", headers=auth()).json["items"]
    assert history[-1]["cause"] == "trigger:t1"
    moved = [e for e in events(leads_db) if e.event_type == "lead.stage_changed" and e.aggregate_id == other["id"]]
    assert moved[-1].trigger_depth == 2 and moved[-1].causation_id == command.event_id
    leads_db.dispose()
    opps_db.dispose()


def test_twenty_concurrent_patches_with_one_etag(postgres):
    url = postgres.create_database("conc_" + uuid.uuid4().hex[:8])
    _, app, db = migrated("leads", url)
    seed(Catalogue(db), "lead")
    lead = app.test_client().post("/v1/leads", json={"title": "t0"}, headers=auth()).json
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def patch(i: int) -> None:
        with app.test_client() as c:
            barrier.wait()
            r = c.patch(f"/v1/leads/{lead['id']}", json={"title": f"t{i + 1}"}, headers={**auth(), "If-Match": '"1"'})
            statuses.append(r.status_code)

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [412] * 19
    final = app.test_client().get(f"/v1/leads/{lead['id']}", headers=auth()).json
    assert final["version"] == 2 and final["title"] != "t0"
    updates = [e for e in events(db) if e.event_type == "lead.updated"]
    assert len(updates) == 1 and updates[0].record.title == final["title"]
    db.dispose()


def test_a_command_that_loses_a_race_with_a_user_write_is_retried_whole(postgres):
    """A trigger's add_to_group reads the lead, a user's write to it commits, then the command
    writes: its version-guarded update finds a newer lead. The command must fail as a whole
    (the consumer retries it) - never commit the membership without its version bump and event."""
    url = postgres.create_database("race_" + uuid.uuid4().hex[:8])
    spec, app, db = migrated("leads", url)
    ids = seed(Catalogue(db), "lead")
    lead = app.test_client().post("/v1/leads", json={"title": "Race"}, headers=auth()).json
    records = records_of(spec, LEAD)
    command = new_envelope("lead.command.add_to_group", "lead", lead["id"], 0,
                           RecordCommand(record_id=lead["id"], kind="lead", action="add_to_group",
                                         group_id=ids["vip"], trigger_id="t1"), trigger_depth=1)
    user = psycopg.connect(postgres.dsn(url.rsplit("/", 1)[1]))
    # The user's write holds the row lock, uncommitted, while the command runs: the command has
    # read version 1 and its guarded update waits for that lock.
    user.execute("UPDATE leads SET title = 'By the user', version = version + 1 WHERE id = %s", (lead["id"],))
    outcome: list[BaseException | None] = []

    def apply_command() -> None:
        try:
            with db.transaction() as s:
                command_handler(records)(s, command)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    worker = threading.Thread(target=apply_command)
    worker.start()
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    deadline = time.monotonic() + 30
    while user.execute(waiting).fetchone() == (0,) and time.monotonic() < deadline:
        time.sleep(0.05)
    user.commit()
    worker.join(30)
    user.close()
    assert len(outcome) == 1 and isinstance(outcome[0], ChangedMeanwhile), outcome
    with db.transaction() as s:
        assert s.execute(select(records.groups)).all() == []  # nothing half-done
    # The consumer's retry, on a fresh read: applied once, with its version bump and event.
    with db.transaction() as s:
        command_handler(records)(s, command)
    final = app.test_client().get(f"/v1/leads/{lead['id']}", headers=auth()).json
    assert final["group_ids"] == [ids["vip"]] and final["version"] == 3 and final["title"] == "By the user"
    added = [e for e in events(db) if e.event_type == "lead.added_to_group"]
    assert len(added) == 1 and added[0].aggregate_version == 3
    db.dispose()

"""The five files of the linking service through its own app, on SQLite and PostgreSQL.

The read model of leads/opportunities (``record_views``) is seeded directly and the catalogue
copy with real catalogue events, as the service's worker would; every outbox row is decoded.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import func, insert, select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token
from crm_linking.file_routes import build_files_api
from crm_linking.tables import (
    activities,
    companies,
    placements,
    record_contacts,
    record_job_orders,
    record_views,
    timeline,
)

pytestmark = pytest.mark.integration
SECRET = "linking-files-test-secret-long-enough-for-hs256"


def auth(roles: tuple[str, ...] = ("admin",), user: str = "u1", office: str = "o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id=user, name=user.upper(), office_id=office,
                                                     roles=list(roles))}


@dataclass
class Env:
    client: Any
    db: Database

    def events(self, prefix: str = "linking.") -> list[Any]:
        with self.db.transaction() as s:
            envelopes = [decode(p) for p in s.execute(select(OUTBOX.c.payload).order_by(OUTBOX.c.id)).scalars()]
        return [e for e in envelopes if e.event_type.startswith(prefix)]

    def count(self, table: Any) -> int:
        with self.db.transaction() as s:
            return int(s.execute(select(func.count()).select_from(table)).scalar_one())

    def timeline(self, record_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self.db.transaction() as s:
            rows = s.execute(select(timeline).where(timeline.c.record_id == record_id).order_by(timeline.c.id)).all()
        return [(r.type, r.data) for r in rows]

    def record(self, kind: str, *, office: str = "o1", stage_id: str | None = None, title: str = "Rec",
               **fields: Any) -> str:
        record_id = str(uuid.uuid4())
        with self.db.transaction() as s:
            s.execute(insert(record_views).values(id=record_id, kind=kind, title=title, owner_id="u1",
                                                  office_id=office, stage_id=stage_id, version=1,
                                                  updated_at=dt.datetime.now(dt.UTC), **fields))
        return record_id

    def link(self, table: Any, kind: str, record_id: str, **values: Any) -> None:
        """A contact or job order link, as a row (the links API is another module's)."""
        with self.db.transaction() as s:
            s.execute(insert(table).values(record_kind=kind, record_id=record_id, linked_at=dt.datetime.now(dt.UTC),
                                           linked_by="u1", **values))

    def stage(self, kind: str, code: str, *, index: int, active: bool = True, **attributes: Any) -> str:
        """A stage in the catalogue copy, from a catalogue event."""
        entry_id = str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        entry = CatalogueEntry(id=entry_id, kind=kind, entity="stage", code=code,
                               names={"en": code.title(), "nl": f"{code} (nl)"}, index=index, active=active,
                               version=1, attributes=attrs)
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope("catalogue.stage.updated", "stage", entry_id, 1, entry))
        return entry_id


@pytest.fixture
def env(any_db_url: str) -> Iterator[Env]:
    spec = find_service("linking")
    settings = load_settings("domain", {"CRM_SERVICE_NAME": "linking", "CRM_DATABASE_URL": any_db_url,
                                        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET})
    migrate(spec, settings)
    app = spec.build_app(settings)
    if not any(r.rule == "/v1/companies" for r in app.extensions.get("crm_routes", [])):
        build_files_api().register(app)  # until service.py lists the files api
    db = Database(any_db_url)
    yield Env(app.test_client(), db)
    db.dispose()
    app.extensions["crm_database"].dispose()


def post(env: Env, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = env.client.post(path, json=body, headers={**auth(), **kw.pop("headers", {})}, **kw)
    assert r.status_code == 201, r.json
    return r.json


def ids(response: Any) -> list[str]:
    return [x["id"] for x in response.json["items"]]


def fields_of(response: Any) -> set[str]:
    return {e["field"] for e in response.json["errors"]}


def test_company_lifecycle(env: Env) -> None:
    c = env.client
    r = c.post("/v1/companies", json={"name": "  Acme BV ", "website": "https://acme.example", "email": "",
                                      "city": "Utrecht"}, headers=auth())
    assert r.status_code == 201, r.json
    acme = r.json
    assert r.headers["Location"] == f"/v1/companies/{acme['id']}" and r.headers["ETag"] == '"1"'
    assert acme["name"] == "Acme BV" and acme["email"] is None and acme["version"] == 1
    assert acme["created_by"] == acme["modified_by"] == "u1" and acme["created_at"].endswith("Z")
    url = f"/v1/companies/{acme['id']}"
    got = c.get(url, headers=auth())
    assert got.status_code == 200 and got.json == acme and got.headers["ETag"] == '"1"'
    created = env.events()
    assert [e.event_type for e in created] == ["linking.company.created"]
    data = MessageToDict(created[0].linking_change.data)
    assert created[0].linking_change.entity == "company" and data["name"] == "Acme BV" and data["id"] == acme["id"]

    # PATCH: If-Match, a no-op writes nothing, null clears an optional field, not a required one.
    assert c.patch(url, json={"city": "Delft"}, headers={**auth(), "If-Match": '"7"'}).status_code == 412
    r = c.patch(url, json={"city": "Delft", "website": None}, headers={**auth(user="u2"), "If-Match": '"1"'})
    assert r.status_code == 200 and r.json["version"] == 2 and r.json["website"] is None
    assert r.json["modified_by"] == "u2" and r.headers["ETag"] == '"2"'
    r = c.patch(url, json={"city": "Delft", "name": "Acme BV"}, headers=auth())
    assert r.status_code == 200 and r.json["version"] == 2
    assert [e.event_type for e in env.events()].count("linking.company.updated") == 1
    for bad, field in (({"name": None}, "name"), ({"name": "  "}, "name"), ({"email": "nope"}, "email"),
                       ({"website": "acme"}, "website"), ({"name": "x" * 301}, "name"), ({"colour": "red"}, "colour")):
        r = c.patch(url, json=bad, headers=auth())
        assert r.status_code == 422 and field in fields_of(r), (bad, r.json)

    # DELETE.
    assert c.delete(url, headers={**auth(), "If-Match": '"1"'}).status_code == 412
    assert c.delete(url, headers={**auth(), "If-Match": '"2"'}).status_code == 204
    assert c.get(url, headers=auth()).status_code == 404
    assert c.patch(url, json={"city": "x"}, headers=auth()).status_code == 404
    assert c.delete(url, headers=auth()).status_code == 404
    deleted = env.events()[-1]
    assert deleted.event_type == "linking.company.deleted" and deleted.linking_change.deleted
    assert deleted.aggregate_version == 3


def test_invalid_bodies_write_nothing(env: Env) -> None:
    c = env.client
    cases = [
        ("/v1/companies", {}, {"name"}),
        ("/v1/companies", {"name": "A", "email": "a@", "website": "ftp://x.example", "phone": "1" * 51},
         {"email", "website", "phone"}),
        ("/v1/companies", {"name": "A", "unknown": 1}, {"unknown"}),
        ("/v1/contacts", {"first_name": "Ada"}, {"last_name"}),
        ("/v1/contacts", {"first_name": "Ada", "last_name": "L", "company_id": str(uuid.uuid4())}, {"company_id"}),
        ("/v1/job-orders", {"title": "", "company_id": "nope"}, {"title"}),  # the body first, then references
        ("/v1/job-orders", {"title": "T", "company_id": "nope", "status": "open"}, {"company_id"}),
        ("/v1/placements", {"candidate_name": "Bob"}, {"job_order_id"}),
        ("/v1/placements", {"candidate_name": "Bob", "job_order_id": str(uuid.uuid4())}, {"job_order_id"}),
        ("/v1/activities", {"type": "fax", "subject": "Hi"}, {"type"}),
        ("/v1/activities", {"type": "task", "subject": "Hi", "due_at": "2026-01-01T10:00:00"}, {"due_at"}),
        ("/v1/activities", {"type": "note", "subject": "Hi", "lead_id": str(uuid.uuid4())}, {"lead_id"}),
    ]
    for path, body, expected in cases:
        r = c.post(path, json=body, headers=auth())
        assert r.status_code == 422, (path, body, r.json)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert fields_of(r) == expected, (path, body, r.json)
    r = c.post("/v1/companies", data="{", headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 400
    assert env.events() == [] and env.count(companies) == 0 and env.count(activities) == 0


def test_lists_search_filters_and_pages(env: Env) -> None:
    c = env.client
    names = ["Alpha 100% Media", "Beta Works", "alphabet soup", "Gamma", "Delta_Alpha"]
    made = [post(env, "/v1/companies", {"name": n, "city": "Amsterdam" if i % 2 else "Rotterdam"})
            for i, n in enumerate(names)]
    newest_first = [m["id"] for m in reversed(made)]
    assert ids(c.get("/v1/companies", headers=auth())) == newest_first
    # Pages of 2: stable, complete, in order; a token belongs to its query.
    seen, token = [], None
    while True:
        query = {"page_size": 2, **({"page_token": token} if token else {})}
        page = c.get("/v1/companies", query_string=query, headers=auth()).json
        seen += [x["id"] for x in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
        r = c.get("/v1/companies", query_string={"page_token": token, "q": "alpha"}, headers=auth())
        assert r.status_code == 422 and fields_of(r) == {"page_token"}
    assert seen == newest_first
    # q: case-insensitive substring over the text fields; % and _ are plain characters.
    assert set(ids(c.get("/v1/companies?q=ALPHA", headers=auth()))) == {made[0]["id"], made[2]["id"], made[4]["id"]}
    assert ids(c.get("/v1/companies", query_string={"q": "100%"}, headers=auth())) == [made[0]["id"]]
    assert ids(c.get("/v1/companies", query_string={"q": "a_a"}, headers=auth())) == [made[4]["id"]]
    assert len(ids(c.get("/v1/companies?q=amsterdam", headers=auth()))) == 2
    assert len(ids(c.get("/v1/companies?q=%20", headers=auth()))) == 5  # blank: no search
    for bad in ("page_size=0", "page_size=201", "colour=red", "company_id=x"):
        r = c.get(f"/v1/companies?{bad}", headers=auth())
        assert r.status_code == 422, bad
    # Contacts: full name search and the company filter.
    acme, other = made[1]["id"], made[3]["id"]
    ada = post(env, "/v1/contacts", {"first_name": "Ada", "last_name": "Lovelace", "company_id": acme,
                                     "email": "ada@acme.example"})
    bob = post(env, "/v1/contacts", {"first_name": "Bob", "last_name": "Ross", "company_id": other})
    post(env, "/v1/contacts", {"first_name": "Cy", "last_name": "Free"})
    assert ids(c.get("/v1/contacts?q=ada%20love", headers=auth())) == [ada["id"]]
    assert ids(c.get("/v1/contacts?q=ACME.example", headers=auth())) == [ada["id"]]
    assert ids(c.get(f"/v1/contacts?company_id={other}", headers=auth())) == [bob["id"]]
    # Job orders: company and status filters, search in the description.
    j1 = post(env, "/v1/job-orders", {"title": "Welder", "company_id": acme, "status": "open",
                                      "description": "Night shifts in Rotterdam"})
    j2 = post(env, "/v1/job-orders", {"title": "Painter", "company_id": acme, "status": "closed"})
    post(env, "/v1/job-orders", {"title": "Baker", "company_id": other, "status": "open"})
    assert ids(c.get(f"/v1/job-orders?company_id={acme}", headers=auth())) == [j2["id"], j1["id"]]
    assert ids(c.get(f"/v1/job-orders?company_id={acme}&status=open", headers=auth())) == [j1["id"]]
    assert ids(c.get("/v1/job-orders?q=night", headers=auth())) == [j1["id"]]
    # Placements: the job order filter and candidate search.
    p1 = post(env, "/v1/placements", {"job_order_id": j1["id"], "candidate_name": "Carla Welds"})
    post(env, "/v1/placements", {"job_order_id": j2["id"], "candidate_name": "Dirk Paints"})
    assert ids(c.get(f"/v1/placements?job_order_id={j1['id']}", headers=auth())) == [p1["id"]]
    assert ids(c.get("/v1/placements?q=carla", headers=auth())) == [p1["id"]]
    # Activities: type filter and search in the body.
    a1 = post(env, "/v1/activities", {"type": "email", "subject": "Offer", "body": "See the ATTACHED offer"})
    a2 = post(env, "/v1/activities", {"type": "task", "subject": "Call back"})
    assert ids(c.get("/v1/activities?type=task", headers=auth())) == [a2["id"]]
    assert ids(c.get("/v1/activities?q=attached", headers=auth())) == [a1["id"]]
    assert c.get("/v1/activities?type=fax", headers=auth()).status_code == 422
    # A change moves a file to the top of its list.
    c.patch(f"/v1/companies/{made[0]['id']}", json={"phone": "+31 30 123"}, headers=auth())
    assert ids(c.get("/v1/companies", headers=auth()))[0] == made[0]["id"]


def test_idempotent_create(env: Env) -> None:
    c = env.client
    headers = {**auth(), "Idempotency-Key": "key-1"}
    first = c.post("/v1/companies", json={"name": "Once"}, headers=headers)
    again = c.post("/v1/companies", json={"name": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201 and again.json["id"] == first.json["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert c.post("/v1/companies", json={"name": "Other"}, headers=headers).status_code == 422
    assert env.count(companies) == 1 and len(env.events()) == 1


def test_deleting_a_company_keeps_its_contacts_and_job_orders(env: Env) -> None:
    c = env.client
    acme = post(env, "/v1/companies", {"name": "Acme"})
    contact = post(env, "/v1/contacts", {"first_name": "Ada", "last_name": "L", "company_id": acme["id"]})
    job = post(env, "/v1/job-orders", {"title": "Welder", "company_id": acme["id"]})
    other = post(env, "/v1/companies", {"name": "Other"})
    r = c.patch(f"/v1/contacts/{contact['id']}", json={"company_id": str(uuid.uuid4())}, headers=auth())
    assert r.status_code == 422 and fields_of(r) == {"company_id"}
    assert c.delete(f"/v1/companies/{acme['id']}", headers=auth()).status_code == 204
    for path, file_id in (("contacts", contact["id"]), ("job-orders", job["id"])):
        now = c.get(f"/v1/{path}/{file_id}", headers=auth()).json
        assert now["company_id"] is None and now["version"] == 2, now
    types = [e.event_type for e in env.events()]
    assert types[-3:] == ["linking.contact.updated", "linking.job_order.updated", "linking.company.deleted"]
    moved = c.patch(f"/v1/job-orders/{job['id']}", json={"company_id": other["id"]}, headers=auth()).json
    assert moved["company_id"] == other["id"] and moved["version"] == 3


def test_a_contact_on_a_record_cannot_be_deleted(env: Env) -> None:
    c = env.client
    contact = post(env, "/v1/contacts", {"first_name": "Ada", "last_name": "L"})
    lead_id = env.record("lead")
    env.link(record_contacts, "lead", lead_id, contact_id=contact["id"], role_id="role-other")
    before = len(env.events())
    r = c.delete(f"/v1/contacts/{contact['id']}", headers=auth())  # admin: whoever asks
    assert r.status_code == 409 and r.json["reason"] == "in_use" and "contacts tab" in r.json["detail"], r.json
    assert r.headers["Content-Type"] == "application/problem+json"
    assert env.count(record_contacts) == 1 and len(env.events()) == before
    assert c.get(f"/v1/contacts/{contact['id']}", headers=auth()).json == contact
    # Off the record, it may go.
    with env.db.transaction() as s:
        s.execute(record_contacts.delete())
    assert c.delete(f"/v1/contacts/{contact['id']}", headers=auth()).status_code == 204
    assert env.events()[-1].event_type == "linking.contact.deleted"


def test_job_orders_placements_and_links(env: Env) -> None:
    c = env.client
    job = post(env, "/v1/job-orders", {"title": "Welder"})
    assert job["related_to"] == {"lead_id": None, "opportunity_id": None}
    url = f"/v1/job-orders/{job['id']}"
    lead_id, opportunity_id = env.record("lead"), env.record("opportunity")
    with env.db.transaction() as s:
        for kind, record_id in (("lead", lead_id), ("opportunity", opportunity_id)):
            s.execute(insert(record_job_orders).values(record_kind=kind, record_id=record_id,
                                                       job_order_id=job["id"], linked_at=dt.datetime.now(dt.UTC),
                                                       linked_by="u1"))
    assert c.get(url, headers=auth()).json["related_to"] == {"lead_id": lead_id, "opportunity_id": opportunity_id}
    listed = c.get("/v1/job-orders", headers=auth()).json["items"]
    assert listed[0]["related_to"] == {"lead_id": lead_id, "opportunity_id": opportunity_id}

    # Placements: dates in order, on create and on a PATCH of one of them.
    r = c.post("/v1/placements", json={"job_order_id": job["id"], "candidate_name": "Carla",
                                       "start_date": "2026-03-01", "end_date": "2026-02-01"}, headers=auth())
    assert r.status_code == 422 and fields_of(r) == {"end_date"}
    placement = post(env, "/v1/placements", {"job_order_id": job["id"], "candidate_name": "Carla",
                                             "start_date": "2026-03-01", "end_date": "2026-06-30"})
    assert placement["start_date"] == "2026-03-01"
    purl = f"/v1/placements/{placement['id']}"
    r = c.patch(purl, json={"end_date": "2026-02-28"}, headers=auth())
    assert r.status_code == 422 and fields_of(r) == {"end_date"}
    r = c.patch(purl, json={"start_date": None, "end_date": "2026-02-28"}, headers=auth())
    assert r.status_code == 200 and r.json["start_date"] is None and r.json["version"] == 2
    r = c.patch(purl, json={"job_order_id": None}, headers=auth())
    assert r.status_code == 422 and fields_of(r) == {"job_order_id"}
    second = post(env, "/v1/placements", {"job_order_id": job["id"], "candidate_name": "Dirk"})

    # Deleting the job order takes its placements and links along, each with its event.
    assert c.delete(url, headers=auth()).status_code == 204
    assert c.get(purl, headers=auth()).status_code == 404
    assert env.count(placements) == 0 and env.count(record_job_orders) == 0
    events = env.events()
    deleted = {e.aggregate_id for e in events if e.event_type == "linking.placement.deleted"}
    assert deleted == {placement["id"], second["id"]}
    unlinked = [e for e in events if e.event_type == "linking.job_order.unlinked"]
    assert {(e.linking_change.record_kind, e.linking_change.record_id) for e in unlinked} == {
        ("lead", lead_id), ("opportunity", opportunity_id)}
    assert events[-1].event_type == "linking.job_order.deleted"
    assert env.timeline(lead_id) == [("job_order_unlinked", {"job_order_id": job["id"], "title": "Welder",
                                                             "by": "u1"})]


def test_activity_on_records(env: Env) -> None:
    c = env.client
    won = env.stage("lead", "WON", index=3, is_end=True, color="#008800")
    new = env.stage("lead", "NEW", index=1, color="#00AA00")
    env.stage("lead", "OLD", index=0, active=False)
    nxt = env.stage("lead", "NEXT", index=2)
    env.stage("opportunity", "PROPOSAL", index=1)
    lead_id = env.record("lead", stage_id=new, title="Big deal")
    elsewhere = env.record("lead", office="o2")
    opportunity_id = env.record("opportunity")

    activity = post(env, "/v1/activities", {"type": "calendar", "subject": "Kick-off", "lead_id": lead_id,
                                            "starts_at": "2026-05-01T10:00:00+02:00",
                                            "ends_at": "2026-05-01T09:00:00Z"},
                    headers={"Accept-Language": "nl"})
    assert activity["starts_at"] == "2026-05-01T08:00:00Z"
    url = f"/v1/activities/{activity['id']}"
    detail = c.get(url, headers={**auth(), "Accept-Language": "nl"}).json
    assert detail == activity
    assert detail["lead"] == {
        "id": lead_id, "title": "Big deal",
        "stage": {"id": new, "name": "NEW (nl)", "code": "NEW", "color": "#00AA00", "is_end": False},
        "allowed_stages": [
            {"id": nxt, "name": "NEXT (nl)", "code": "NEXT", "color": None, "is_end": False},
            {"id": won, "name": "WON (nl)", "code": "WON", "color": "#008800", "is_end": True},
        ],
    }
    assert "opportunity" not in detail
    assert c.get(url, headers=auth()).json["lead"]["stage"]["name"] == "New"
    assert "lead" not in c.get("/v1/activities", headers=auth()).json["items"][0]
    assert env.timeline(lead_id) == [("activity_added", {"activity_id": activity["id"], "type": "calendar",
                                                         "subject": "Kick-off"})]
    created = env.events()[-1]
    assert created.event_type == "linking.activity.created"
    assert (created.linking_change.record_kind, created.linking_change.record_id) == ("lead", lead_id)

    # Refused links: unknown or invisible record (422), missing record permission (403); nothing written.
    before = (len(env.events()), env.count(activities))
    r = c.post("/v1/activities", json={"type": "note", "subject": "x", "lead_id": elsewhere},
               headers=auth(roles=("marketing",)))
    assert r.status_code == 422 and fields_of(r) == {"lead_id"} and "not visible" in r.json["errors"][0]["message"]
    r = c.post("/v1/activities", json={"type": "note", "subject": "x", "opportunity_id": opportunity_id},
               headers=auth(roles=("marketing",)))
    assert r.status_code == 403 and "opportunities:edit" in r.json["detail"]
    r = c.post("/v1/activities", json={"type": "note", "subject": "x", "starts_at": "2026-05-01T10:00:00Z",
                                       "ends_at": "2026-05-01T09:00:00Z"}, headers=auth())
    assert r.status_code == 422 and fields_of(r) == {"ends_at"}
    assert c.post("/v1/activities", json={"type": "note", "subject": "x"},
                  headers=auth(roles=("viewer",))).status_code == 403
    assert c.patch(url, json={"lead_id": None}, headers=auth(roles=("account_manager",))).status_code == 403
    assert (len(env.events()), env.count(activities)) == before
    # A marketing user may put an activity on a lead of their office.
    mine = post(env, "/v1/activities", {"type": "note", "subject": "Mine", "lead_id": lead_id},
                headers=auth(roles=("marketing",)))
    assert ids(c.get(f"/v1/activities?lead_id={lead_id}", headers=auth())) == [mine["id"], activity["id"]]
    # Another office does not see the activity of a record it may not see.
    assert c.get(url, headers=auth(roles=("viewer",), office="o2")).status_code == 404

    # Moving it to the opportunity: a PATCH of links notes both timelines.
    r = c.patch(url, json={"lead_id": None, "opportunity_id": opportunity_id, "starts_at": None},
                headers={**auth(), "If-Match": '"1"'})
    assert r.status_code == 200, r.json
    moved = r.json
    assert moved["lead_id"] is None and "lead" not in moved
    assert moved["opportunity"] == {"id": opportunity_id, "title": "Rec", "stage": None,
                                    "allowed_stages": [{"id": moved["opportunity"]["allowed_stages"][0]["id"],
                                                        "name": "Proposal", "code": "PROPOSAL", "color": None,
                                                        "is_end": False}]}
    assert [t for t, _ in env.timeline(lead_id)] == ["activity_added", "activity_added", "activity_removed"]
    assert ids(c.get(f"/v1/activities?opportunity_id={opportunity_id}", headers=auth())) == [activity["id"]]
    # A record the read model no longer knows shows as its id only.
    with env.db.transaction() as s:
        s.execute(record_views.delete().where(record_views.c.id == opportunity_id))
    assert c.get(url, headers=auth()).json["opportunity"] == {"id": opportunity_id}
    # Deleting it takes it off the record's timeline (and needs that record's edit permission).
    assert c.delete(url, headers=auth(roles=("marketing",))).status_code == 403
    assert c.delete(url, headers=auth(roles=("account_manager",))).status_code == 204
    assert env.timeline(opportunity_id) == [
        ("activity_added", {"activity_id": activity["id"], "type": "calendar", "subject": "Kick-off"}),
        ("activity_removed", {"activity_id": activity["id"], "type": "calendar", "subject": "Kick-off"})]
    assert env.events()[-1].event_type == "linking.activity.deleted"


def test_permissions_and_not_found(env: Env) -> None:
    c = env.client
    viewer = auth(roles=("viewer",))
    company = post(env, "/v1/companies", {"name": "Seen"})
    assert c.get("/v1/companies").status_code == 401
    assert c.get("/v1/companies", headers=auth(roles=("nobody",))).status_code == 403
    assert ids(c.get("/v1/companies", headers=viewer)) == [company["id"]]
    assert c.get(f"/v1/companies/{company['id']}", headers=viewer).status_code == 200
    for method, path in (("post", "/v1/companies"), ("patch", f"/v1/companies/{company['id']}"),
                         ("delete", f"/v1/companies/{company['id']}")):
        r = getattr(c, method)(path, json={"name": "x"}, headers=viewer)
        assert r.status_code == 403, (method, path)
    for collection in ("companies", "contacts", "job-orders", "placements", "activities"):
        missing = f"/v1/{collection}/{uuid.uuid4()}"
        assert c.get(missing, headers=auth()).status_code == 404
        assert c.patch(missing, json={}, headers=auth()).status_code == 404
        assert c.delete(missing, headers=auth()).status_code == 404
    assert len(env.events()) == 1
    paths = c.get("/openapi.json").json["paths"]
    assert {"/v1/companies", "/v1/job-orders/{job_order_id}", "/v1/activities/{activity_id}"} <= set(paths)


# -- office visibility through the records (API.md, "Files") -------------------------------------

def test_activities_follow_their_records_office(env: Env) -> None:
    c = env.client
    o1, o2 = auth(roles=("marketing",), user="ann", office="o1"), auth(roles=("marketing",), user="olga", office="o2")
    own_lead, far_lead = env.record("lead", office="o1"), env.record("lead", office="o2", title="Far")
    far_opportunity = env.record("opportunity", office="o2")
    on_own = post(env, "/v1/activities", {"type": "note", "subject": "On o1", "lead_id": own_lead}, headers=o1)
    on_far = post(env, "/v1/activities", {"type": "note", "subject": "On o2", "lead_id": far_lead})  # admin, o1
    both = post(env, "/v1/activities", {"type": "note", "subject": "On both", "lead_id": own_lead,
                                        "opportunity_id": far_opportunity})
    mine = post(env, "/v1/activities", {"type": "task", "subject": "Unlinked o1"}, headers=o1)
    theirs = post(env, "/v1/activities", {"type": "task", "subject": "Unlinked o2"}, headers=o2)
    legacy = str(uuid.uuid4())  # made before offices were recorded: shared, as it was
    now = dt.datetime.now(dt.UTC)
    with env.db.transaction() as s:
        s.execute(insert(activities).values(id=legacy, type="note", subject="Legacy", version=1, created_at=now,
                                            created_by="old", modified_at=now, modified_by="old"))
    with env.db.transaction() as s:
        offices = dict(s.execute(select(activities.c.id, activities.c.office_id)).all())
    assert (offices[mine["id"]], offices[theirs["id"]], offices[on_far["id"]]) == ("o1", "o2", "o1")
    assert "office_id" not in mine  # not a field of the API

    # o1 sees its record's activities and its own unlinked ones; o2 its own.
    visible = {a: c.get(f"/v1/activities/{a}", headers=o1).status_code
               for a in (on_own["id"], on_far["id"], both["id"], mine["id"], theirs["id"], legacy)}
    assert visible == {on_own["id"]: 200, on_far["id"]: 404, both["id"]: 404, mine["id"]: 200, theirs["id"]: 404,
                       legacy: 200}
    assert set(ids(c.get("/v1/activities", headers=o1))) == {on_own["id"], mine["id"], legacy}
    assert set(ids(c.get("/v1/activities", headers=o2))) == {on_far["id"], theirs["id"], legacy}
    assert len(ids(c.get("/v1/activities", headers=auth()))) == 6  # admin: every office
    assert set(ids(c.get(f"/v1/activities?lead_id={own_lead}", headers=o1))) == {on_own["id"]}
    for record_filter in (f"lead_id={far_lead}", f"opportunity_id={far_opportunity}", f"lead_id={uuid.uuid4()}"):
        r = c.get(f"/v1/activities?{record_filter}", headers=o1)
        assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json", record_filter
        assert "Far" not in r.get_data(as_text=True)
    assert ids(c.get(f"/v1/activities?lead_id={far_lead}", headers=auth())) == [on_far["id"]]
    # The activity tab of a visible record leaves out what also sits on a hidden one.
    tab = c.get(f"/v1/leads/{own_lead}/activities", headers=o1).json["items"]
    assert [a["id"] for a in tab] == [on_own["id"]]

    # Writes to what o1 may not see are "not found", and change nothing.
    before = (len(env.events()), env.timeline(far_lead))
    for activity in (on_far, both, theirs):
        url = f"/v1/activities/{activity['id']}"
        assert c.patch(url, json={"subject": "Mine now"}, headers=o1).status_code == 404
        assert c.patch(url, json={"lead_id": None}, headers={**o1, "If-Match": '"1"'}).status_code == 404
        assert c.delete(url, headers=o1).status_code == 404
        assert c.get(url, headers=auth()).json == activity  # read back by an admin: unchanged
    # Putting an activity on a record o1 may not see: 422 as for an unknown record; moving one away
    # from its record needs both.
    r = c.patch(f"/v1/activities/{mine['id']}", json={"lead_id": far_lead}, headers=o1)
    assert r.status_code == 422 and fields_of(r) == {"lead_id"}
    r = c.patch(f"/v1/activities/{on_own['id']}", json={"lead_id": far_lead}, headers=o1)
    assert r.status_code == 422 and fields_of(r) == {"lead_id"}
    r = c.post("/v1/activities", json={"type": "note", "subject": "x", "lead_id": far_lead}, headers=o1)
    assert r.status_code == 422 and fields_of(r) == {"lead_id"}
    assert (len(env.events()), env.timeline(far_lead)) == before
    assert c.get(f"/v1/activities/{mine['id']}", headers=o1).json["version"] == 1

    # Off its record, an activity belongs to the office it was created in (admin made it in o1).
    r = c.patch(f"/v1/activities/{on_far['id']}", json={"lead_id": None}, headers=auth(office="o1"))
    assert r.status_code == 200
    assert c.get(f"/v1/activities/{on_far['id']}", headers=o1).status_code == 200
    assert c.get(f"/v1/activities/{on_far['id']}", headers=o2).status_code == 404
    # A record the read model does not know (any more): the activity's own office decides.
    with env.db.transaction() as s:
        s.execute(record_views.delete().where(record_views.c.id == own_lead))
    assert c.get(f"/v1/activities/{on_own['id']}", headers=o1).status_code == 200
    assert c.get(f"/v1/activities/{on_own['id']}", headers=o2).status_code == 404


def _shared_world(env: Env) -> dict[str, Any]:
    """Files office o2's lead shows (as its company and contact, on its tabs), and free ones."""
    c = env.client
    made = {name: post(env, "/v1/companies", {"name": name}) for name in ("acme", "free_company", "parent")}
    for name in ("main", "linked", "free_contact"):
        made[name] = post(env, "/v1/contacts", {"first_name": name, "last_name": "X"})
    made["employee"] = post(env, "/v1/contacts", {"first_name": "Emp", "last_name": "X",
                                                  "company_id": made["parent"]["id"]})
    for name in ("job", "free_job"):
        made[name] = post(env, "/v1/job-orders", {"title": name})
    made["placement"] = post(env, "/v1/placements", {"job_order_id": made["job"]["id"], "candidate_name": "Carla"})
    made["free_placement"] = post(env, "/v1/placements", {"job_order_id": made["free_job"]["id"],
                                                          "candidate_name": "Dirk"})
    far = env.record("lead", office="o2", company_id=made["acme"]["id"], contact_id=made["main"]["id"])
    env.link(record_contacts, "lead", far, contact_id=made["linked"]["id"], role_id="role-other")
    env.link(record_contacts, "lead", far, contact_id=made["employee"]["id"], role_id="role-other2")
    env.link(record_job_orders, "lead", far, job_order_id=made["job"]["id"])
    made["far"] = {"id": far}
    assert c.get(f"/v1/job-orders/{made['job']['id']}", headers=auth()).json["related_to"]["lead_id"] == far
    return made


_FILE_PATHS = {"acme": "companies", "free_company": "companies", "parent": "companies", "main": "contacts",
               "linked": "contacts", "free_contact": "contacts", "employee": "contacts", "job": "job-orders",
               "free_job": "job-orders", "placement": "placements", "free_placement": "placements"}


def _read_back(env: Env, made: dict[str, Any]) -> dict[str, Any]:
    """Every file of ``_shared_world`` as its owner (office o2) reads it."""
    owner = auth(roles=("marketing",), user="olga", office="o2")
    return {name: env.client.get(f"/v1/{collection}/{made[name]['id']}", headers=owner).json
            for name, collection in _FILE_PATHS.items()}


def test_shared_files_refuse_changes_a_hidden_record_would_show(env: Env) -> None:
    c = env.client
    made = _shared_world(env)
    o1 = auth(roles=("marketing",), user="ann", office="o1")
    before, events, timeline_before = _read_back(env, made), len(env.events()), env.timeline(made["far"]["id"])

    refused = [
        ("PATCH", "acme", {"name": "Taken over"}),  # the hidden lead's company
        ("PATCH", "main", {"last_name": "Taken over"}),  # its contact_id
        ("PATCH", "linked", {"email": "x@example.com"}),  # on its contacts tab
        ("PATCH", "job", {"title": "Taken over"}),  # on its job orders tab
        ("DELETE", "job", None),
        ("PATCH", "placement", {"candidate_name": "Taken over"}),  # on its placements tab
        ("DELETE", "placement", None),
        ("PATCH", "free_placement", {"job_order_id": made["job"]["id"]}),  # onto its placements tab
        ("DELETE", "parent", None),  # would take the company off the hidden lead's contact
    ]
    for method, name, body in refused:
        path = f"/v1/{_FILE_PATHS[name]}/{made[name]['id']}"
        r = c.open(path, method=method, json=body, headers={**o1, "If-Match": f'"{made[name]["version"]}"'})
        assert r.status_code == 409, (method, name, r.json)
        assert r.headers["Content-Type"] == "application/problem+json" and r.json["reason"] == "hidden_record"
        assert made["far"]["id"] not in r.json["detail"]
    r = c.post("/v1/placements", json={"job_order_id": made["job"]["id"], "candidate_name": "Eve"}, headers=o1)
    assert r.status_code == 409 and r.json["reason"] == "hidden_record", r.json
    # Deleting a company or contact a record references is refused for everyone, o1 included.
    for name in ("acme", "main", "linked"):
        r = c.delete(f"/v1/{_FILE_PATHS[name]}/{made[name]['id']}", headers=o1)
        assert r.status_code == 409 and r.json["reason"] == "in_use", (name, r.json)

    # Nothing changed: read back by the owner, no event, no timeline entry.
    assert _read_back(env, made) == before
    assert len(env.events()) == events and env.timeline(made["far"]["id"]) == timeline_before

    # What no hidden record shows stays open to o1: free files, new files in a shared company.
    for name, body in (("free_company", {"city": "Delft"}), ("free_contact", {"phone": "+31 6"}),
                       ("free_job", {"status": "open"}), ("free_placement", {"candidate_name": "Dirk B."})):
        r = c.patch(f"/v1/{_FILE_PATHS[name]}/{made[name]['id']}", json=body, headers=o1)
        assert r.status_code == 200 and r.json["version"] == 2, (name, r.json)
    post(env, "/v1/contacts", {"first_name": "New", "last_name": "Hire", "company_id": made["acme"]["id"]},
         headers=o1)
    post(env, "/v1/placements", {"job_order_id": made["free_job"]["id"], "candidate_name": "Fay"}, headers=o1)
    # Those who may see the record may change them (o2, and admins of any office).
    o2 = auth(roles=("marketing",), user="olga", office="o2")
    assert c.patch(f"/v1/contacts/{made['main']['id']}", json={"phone": "+31 7"}, headers=o2).status_code == 200
    assert c.patch(f"/v1/job-orders/{made['job']['id']}", json={"status": "closed"},
                   headers=auth()).status_code == 200
    assert c.delete(f"/v1/placements/{made['placement']['id']}", headers=o2).status_code == 204


def test_files_in_use_cannot_be_deleted_by_anyone(env: Env) -> None:
    c = env.client
    acme = post(env, "/v1/companies", {"name": "Acme"})
    ada = post(env, "/v1/contacts", {"first_name": "Ada", "last_name": "L", "company_id": acme["id"]})
    lead = env.record("lead", company_id=acme["id"])
    opportunity = env.record("opportunity", contact_id=ada["id"])
    for headers in (auth(), auth(roles=("marketing",))):
        r = c.delete(f"/v1/companies/{acme['id']}", headers=headers)
        assert r.status_code == 409 and "company_id" in r.json["detail"], r.json
        r = c.delete(f"/v1/contacts/{ada['id']}", headers=headers)
        assert r.status_code == 409 and "contact_id" in r.json["detail"], r.json
    assert c.get(f"/v1/companies/{acme['id']}", headers=auth()).json == acme
    assert c.get(f"/v1/contacts/{ada['id']}", headers=auth()).json == ada
    # Once no record uses them, they may go; the contact loses its company (SET NULL, a new version).
    with env.db.transaction() as s:
        s.execute(record_views.update().where(record_views.c.id.in_([lead, opportunity]))
                  .values(company_id=None, contact_id=None))
    assert c.delete(f"/v1/companies/{acme['id']}", headers=auth()).status_code == 204
    assert c.get(f"/v1/contacts/{ada['id']}", headers=auth()).json["company_id"] is None
    assert c.delete(f"/v1/contacts/{ada['id']}", headers=auth()).status_code == 204


def test_the_new_refusals_are_documented(env: Env) -> None:
    paths = env.client.get("/openapi.json").json["paths"]
    for path, method, status in (("/v1/companies/{company_id}", "patch", "409"),
                                 ("/v1/companies/{company_id}", "delete", "409"),
                                 ("/v1/contacts/{contact_id}", "delete", "409"),
                                 ("/v1/job-orders/{job_order_id}", "patch", "409"),
                                 ("/v1/placements", "post", "409"),
                                 ("/v1/placements/{placement_id}", "delete", "409"),
                                 ("/v1/activities", "get", "404"),
                                 ("/v1/activities/{activity_id}", "patch", "404")):
        assert status in paths[path][method]["responses"], (path, method, status)
    assert "409" not in paths["/v1/activities/{activity_id}"]["delete"]["responses"]

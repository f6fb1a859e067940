"""Links of contacts and job orders to leads and opportunities, the detail tabs, the records
reached from contacts and companies, and the reactions to the records' events.

The linking app is built from its ServiceSpec on SQLite and on PostgreSQL. Its read model of
records and its catalogue copy are fed with real events (as its worker would); files are
seeded as rows. Every outbox row linking writes is decoded and checked.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import func, insert, select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.records_pb2 import (
    GroupMembershipChanged,
    LeadConverted,
    PipelineRecord,
    RecordDeleted,
    StageChanged,
)
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kit.cli import migrate
from crm_kit.db import Database, utcnow
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token
from crm_kit.web.auth import DEFAULT_ROLE_PERMISSIONS
from crm_linking import links
from crm_linking.link_routes import build_links_api
from crm_linking.reactions import reactions_handler
from crm_linking.records import RECORDS, apply_record_event
from crm_linking.tables import (
    activities,
    catalogue_view,
    companies,
    contacts,
    job_orders,
    placements,
    record_contacts,
    record_job_orders,
    record_views,
    timeline,
)

pytestmark = pytest.mark.integration

SECRET = "linking-links-test-secret-long-enough-for-hs256"
PLURALS = {"lead": "leads", "opportunity": "opportunities"}
OTHER_KIND = {"lead": "opportunity", "opportunity": "lead"}
# Default roles plus two that each lack one side: only files, or only leads.
ROLE_PERMISSIONS = {**DEFAULT_ROLE_PERMISSIONS, "files_clerk": ["files:view", "files:edit"],
                    "lead_editor": ["leads:view", "leads:edit"]}


def auth(roles: tuple[str, ...] = ("admin",), user: str = "u1", office: str = "o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id=user, name=user.upper(), office_id=office,
                                                     roles=list(roles))}


def _audit(at: dt.datetime | None = None) -> dict[str, Any]:
    at = at or utcnow()
    return {"version": 1, "created_at": at, "created_by": "seed", "modified_at": at, "modified_by": "seed"}


def build_app(url: str) -> Flask:
    spec = find_service("linking")
    settings = load_settings("domain", {"CRM_SERVICE_NAME": "linking", "CRM_DATABASE_URL": url,
                                        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET,
                                        "CRM_ROLE_PERMISSIONS": json.dumps(ROLE_PERMISSIONS)})
    migrate(spec, settings)
    app = spec.build_app(settings)
    # Until service.py lists the links Api: register it here, once.
    if not any(rule.rule == "/v1/leads/<record_id>/contacts" for rule in app.url_map.iter_rules()):
        build_links_api().register(app)
    return app


@dataclass
class Linking:
    """The linking app and its database, with seeding helpers."""

    app: Flask
    client: FlaskClient
    db: Database
    roles: dict[str, dict[str, str]]

    # catalogue and records, through their events

    def put_role(self, kind: str, code: str, *, active: bool = True, index: int = 0) -> str:
        entry_id = str(uuid.uuid4())
        entry = CatalogueEntry(id=entry_id, kind=kind, entity="roles", code=code,
                               names={"en": code.title(), "nl": f"{code} (nl)"}, index=index, active=active,
                               version=1, attributes=Struct())
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope("catalogue.table_entry.created", "roles", entry_id, 1, entry))
        return entry_id

    def record(self, kind: str, title: str = "Record", *, office: str = "o1", record_id: str | None = None,
               **fields: Any) -> str:
        state = PipelineRecord(id=record_id or str(uuid.uuid4()), kind=kind, title=title, owner_id="u1",
                               office_id=office, stage_id="stage-new", version=1, **fields)
        with self.db.transaction() as s:
            apply_record_event(s, new_envelope(f"{kind}.created", kind, state.id, 1, state))
        return state.id

    def react(self, envelope: Envelope) -> None:
        """What the worker's reactions consumer does with one delivery (without its inbox)."""
        with self.db.transaction() as s:
            reactions_handler(s, envelope)

    # files, as rows (the files API is another module's)

    def insert(self, table: Any, **values: Any) -> str:
        values.setdefault("id", str(uuid.uuid4()))
        with self.db.transaction() as s:
            s.execute(insert(table).values(**{**_audit(values.pop("at", None)), **values}))
        return str(values["id"])

    def company(self, name: str) -> str:
        return self.insert(companies, name=name)

    def contact(self, first: str, last: str, company_id: str | None = None) -> str:
        return self.insert(contacts, first_name=first, last_name=last, company_id=company_id)

    def job_order(self, title: str) -> str:
        return self.insert(job_orders, title=title)

    # what linking wrote

    def events(self) -> list[Envelope]:
        with self.db.transaction() as s:
            rows = s.execute(select(OUTBOX.c.payload).where(OUTBOX.c.topic == "crm.linking.v1")
                             .order_by(OUTBOX.c.id)).scalars().all()
        return [decode(p) for p in rows]

    def link_events(self, record_id: str) -> list[tuple[str, str]]:
        return [(e.event_type, e.aggregate_id) for e in self.events() if e.linking_change.record_id == record_id]

    def timeline(self, kind: str, record_id: str) -> list[Any]:
        with self.db.transaction() as s:
            return list(s.execute(select(timeline).where(timeline.c.record_kind == kind,
                                                         timeline.c.record_id == record_id)
                                  .order_by(timeline.c.at.desc(), timeline.c.id.desc())).all())

    def count(self, table: Any, *where: Any) -> int:
        with self.db.transaction() as s:
            return int(s.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def make_linking(url: str) -> Linking:
    app = build_app(url)
    linking = Linking(app, app.test_client(), Database(url), {})
    for kind in PLURALS:
        linking.roles[kind] = {code: linking.put_role(kind, code, index=i)
                               for i, code in enumerate(("MAIN", "SIGN", "OTHER", "EXTRA"))}
        linking.roles[kind]["OLD"] = linking.put_role(kind, "OLD", active=False)
    return linking


def close(linking: Linking) -> None:
    linking.db.dispose()
    linking.app.extensions["crm_database"].dispose()


@pytest.fixture
def linking(any_db_url: str) -> Iterator[Linking]:
    ln = make_linking(any_db_url)
    yield ln
    close(ln)


def items(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.json
    return list(response.json["items"])


def test_the_api_is_registered_once_and_documented(linking):
    rules = [r.rule for r in linking.app.url_map.iter_rules()]
    assert rules.count("/v1/leads/<record_id>/contacts") == 2  # GET and POST, registered once
    paths = linking.client.get("/openapi.json").json["paths"]
    for path in ("/v1/leads/{record_id}/contacts", "/v1/opportunities/{record_id}/job-orders/{job_order_id}",
                 "/v1/leads/{record_id}/timeline", "/v1/contacts/{contact_id}/opportunities",
                 "/v1/companies/{company_id}/leads"):
        assert path in paths, path
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert RECORDS.name == "records" and RECORDS.topics == ["crm.leads.v1", "crm.opportunities.v1"]


def test_the_records_consumer_takes_an_event_into_the_view_and_reacts_in_one_pass(linking):
    """One consumer group for the record topics: the read model and the timeline from one delivery."""
    state = PipelineRecord(id=str(uuid.uuid4()), kind="lead", title="One pass", owner_id="u1", office_id="o1",
                           stage_id="stage-new", version=1)
    with linking.db.transaction() as s:
        RECORDS.handler(s, new_envelope("lead.created", "lead", state.id, 1, state))
    assert linking.count(record_views, record_views.c.id == state.id) == 1
    assert [entry.type for entry in linking.timeline("lead", state.id)] == ["created"]


def test_a_write_answers_with_the_last_outbox_row_it_wrote(linking):
    """Crm-Written: the gateway's consistency token covers a write by the id of its last event's
    outbox row; a refused write and a read name none."""
    c, roles = linking.client, linking.roles["lead"]
    record = linking.record("lead", "Written")
    anna, bob = linking.contact("Anna", "Smit"), linking.contact("Bob", "Jansen")
    with linking.db.transaction() as s:
        last = s.execute(select(func.max(OUTBOX.c.id))).scalar() or 0
    r = c.post(f"/v1/leads/{record}/contacts", json={"contact_id": anna, "role_id": roles["OTHER"]}, headers=auth())
    assert r.status_code == 201 and int(r.headers["Crm-Written"]) == last + 1
    r = c.post(f"/v1/leads/{record}/contacts", json={"contact": {"first_name": "Di", "last_name": "New"},
                                                     "role_id": roles["EXTRA"]}, headers=auth())
    assert r.status_code == 201 and int(r.headers["Crm-Written"]) == last + 3  # the contact's, then the link's
    r = c.post(f"/v1/leads/{record}/contacts", json={"contact_id": anna, "role_id": roles["OTHER"]}, headers=auth())
    assert r.status_code == 409 and "Crm-Written" not in r.headers
    r = c.delete(f"/v1/leads/{record}/contacts/{anna}", headers=auth())
    assert r.status_code == 204 and int(r.headers["Crm-Written"]) == last + 4
    assert "Crm-Written" not in c.get(f"/v1/leads/{record}/contacts", headers=auth()).headers
    r = c.patch(f"/v1/contacts/{bob}", json={"phone": "+31 6 1"}, headers={**auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and int(r.headers["Crm-Written"]) == last + 5


# -- contacts on a record --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lead", "opportunity"])
def test_contacts_on_a_record(linking, kind):
    c, roles, other_roles = linking.client, linking.roles[kind], linking.roles[OTHER_KIND[kind]]
    record = linking.record(kind, "Acme deal")
    base = f"/v1/{PLURALS[kind]}/{record}/contacts"
    anna = linking.contact("Anna", "Smit")

    r = c.post(base, json={"contact_id": anna, "role_id": roles["OTHER"]}, headers=auth())
    assert r.status_code == 201, r.json
    assert r.json["contact_id"] == anna and r.json["role_id"] == roles["OTHER"]
    assert r.json["role"] == {"id": roles["OTHER"], "code": "OTHER", "name": "Other"}
    assert r.json["contact"]["first_name"] == "Anna" and r.json["contact"]["version"] == 1
    assert r.json["linked_by"] == "u1" and r.json["linked_at"].endswith("Z")
    assert "ETag" not in r.headers
    # A new contact, created in the same transaction, as the signing authority (the record has
    # none yet); the role's name in the caller's language.
    r = c.post(base, json={"contact": {"first_name": "Bob", "last_name": "Jansen", "email": "bob@example.com"},
                           "role_id": roles["SIGN"]}, headers={**auth(), "Accept-Language": "nl"})
    assert r.status_code == 201, r.json
    bob = r.json["contact_id"]
    assert r.json["role"]["name"] == "SIGN (nl)" and r.json["contact"]["email"] == "bob@example.com"
    assert linking.count(contacts, contacts.c.id == bob) == 1

    # Refusals, and nothing of them remains.
    before = linking.count(contacts)
    carl = linking.contact("Carl", "Vos")
    refused = [
        ({"contact_id": anna, "role_id": roles["EXTRA"]}, 409, None),  # already linked
        ({"contact_id": carl, "role_id": roles["SIGN"]}, 409, None),  # a second signing authority
        ({"contact": {"first_name": "Di", "last_name": "New"}, "role_id": roles["SIGN"]}, 409, None),
        ({"contact_id": carl, "role_id": roles["MAIN"]}, 409, None),  # MAIN is the record's contact_id
        ({"contact": {"first_name": "Ed", "last_name": "New"}, "role_id": roles["MAIN"]}, 409, None),
        ({"contact_id": carl, "role_id": other_roles["OTHER"]}, 422, "role_id"),
        ({"contact_id": anna, "role_id": roles["OLD"]}, 422, "role_id"),  # inactive
        ({"contact_id": anna, "role_id": str(uuid.uuid4())}, 422, "role_id"),
        ({"contact_id": str(uuid.uuid4()), "role_id": roles["OTHER"]}, 422, "contact_id"),
        ({"contact_id": anna, "contact": {"first_name": "A", "last_name": "B"}, "role_id": roles["OTHER"]}, 422,
         "contact_id"),
        ({"role_id": roles["OTHER"]}, 422, "contact_id"),
        ({"contact": {"first_name": "No", "last_name": "Company", "company_id": str(uuid.uuid4())},
          "role_id": roles["OTHER"]}, 422, "contact.company_id"),
        ({"contact": {"first_name": "X", "last_name": "Y", "age": 3}, "role_id": roles["OTHER"]}, 422,
         "contact.age"),
    ]
    before += 1  # Carl
    for body, status, field in refused:
        r = c.post(base, json=body, headers=auth())
        assert r.status_code == status, (body, r.json)
        assert r.headers["Content-Type"] == "application/problem+json"
        if field:
            assert field in [e["field"] for e in r.json["errors"]], (body, r.json)
    assert linking.count(contacts) == before
    taken = c.post(base, json={"contact_id": carl, "role_id": roles["SIGN"]}, headers=auth()).json
    assert taken["role_code"] == "SIGN" and taken["contact_id"] == bob and "at most one SIGN" in taken["detail"]
    main = c.post(base, json={"contact_id": carl, "role_id": roles["MAIN"]}, headers=auth()).json
    assert main["role_code"] == "MAIN" and "contact_id" in main["detail"]

    # The list, in cursor pages (oldest link first).
    first = c.get(base, query_string={"page_size": 1}, headers=auth())
    assert [x["contact_id"] for x in items(first)] == [anna] and first.json["next_page_token"]
    second = c.get(base, query_string={"page_size": 1, "page_token": first.json["next_page_token"]},
                   headers=auth())
    assert [x["contact_id"] for x in items(second)] == [bob] and second.json["next_page_token"] is None
    assert items(second)[0]["role"]["code"] == "SIGN"

    # Roles: MAIN and SIGN are never set or cleared by a role change.
    for contact_id, role in ((anna, "MAIN"), (anna, "SIGN"), (bob, "OTHER")):
        r = c.patch(f"{base}/{contact_id}", json={"role_id": roles[role]}, headers=auth())
        assert r.status_code == 409, (contact_id, role, r.json)
        assert r.json["role_code"] == ("SIGN" if contact_id == bob else role)
    assert c.patch(f"{base}/{anna}", json={"role_id": other_roles["EXTRA"]}, headers=auth()).status_code == 422
    assert c.patch(f"{base}/{linking.contact('Not', 'Linked')}", json={"role_id": roles["EXTRA"]},
                   headers=auth()).status_code == 404
    r = c.patch(f"{base}/{anna}", json={"role_id": roles["EXTRA"]}, headers=auth())
    assert r.status_code == 200 and r.json["role"]["code"] == "EXTRA"
    assert c.patch(f"{base}/{anna}", json={"role_id": roles["EXTRA"]}, headers=auth()).status_code == 200  # no-op

    # Remove from the record: the contact itself stays. The signing authority may be removed,
    # and then another contact may become it.
    assert c.delete(f"{base}/{anna}", headers=auth()).status_code == 204
    assert c.delete(f"{base}/{anna}", headers=auth()).status_code == 404
    assert [x["contact_id"] for x in items(c.get(base, headers=auth()))] == [bob]
    assert linking.count(contacts, contacts.c.id == anna) == 1
    assert c.delete(f"{base}/{bob}", headers=auth()).status_code == 204
    assert c.post(base, json={"contact_id": carl, "role_id": roles["SIGN"]}, headers=auth()).status_code == 201

    # One event and one timeline entry per change, in order.
    assert linking.link_events(record) == [
        ("linking.contact.linked", f"{anna}:{record}"), ("linking.contact.linked", f"{bob}:{record}"),
        ("linking.contact.role_changed", f"{anna}:{record}"), ("linking.contact.unlinked", f"{anna}:{record}"),
        ("linking.contact.unlinked", f"{bob}:{record}"), ("linking.contact.linked", f"{carl}:{record}")]
    changes = {e.event_type: e.linking_change for e in linking.events()}
    assert changes["linking.contact.created"].id == bob and changes["linking.contact.created"].entity == "contact"
    assert dict(changes["linking.contact.role_changed"].data) == {
        "contact_id": anna, "role_id": roles["EXTRA"], "from_role_id": roles["OTHER"]}
    assert changes["linking.contact.unlinked"].deleted and changes["linking.contact.unlinked"].record_kind == kind
    tl = items(c.get(f"/v1/{PLURALS[kind]}/{record}/timeline", headers=auth()))
    assert [x["type"] for x in tl] == ["contact_linked", "contact_unlinked", "contact_unlinked",
                                       "contact_role_changed", "contact_linked", "contact_linked"]
    assert tl[-1]["data"]["contact_name"] == "Anna Smit" and tl[3]["data"]["to_role_id"] == roles["EXTRA"]


# -- job orders on a record ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lead", "opportunity"])
def test_job_orders_on_a_record(linking, kind):
    c, plural = linking.client, PLURALS[kind]
    first, second = linking.record(kind, "First"), linking.record(kind, "Second")
    elsewhere = linking.record(OTHER_KIND[kind], "Other kind")
    welder = linking.job_order("Welder")

    r = c.post(f"/v1/{plural}/{first}/job-orders", json={"job_order_id": welder}, headers=auth())
    assert r.status_code == 201, r.json
    assert r.json["job_order_id"] == welder and r.json["job_order"]["title"] == "Welder"
    again = c.post(f"/v1/{plural}/{first}/job-orders", json={"job_order_id": welder}, headers=auth())
    assert again.status_code == 409 and "already linked to this" in again.json["detail"]
    taken = c.post(f"/v1/{plural}/{second}/job-orders", json={"job_order_id": welder}, headers=auth())
    assert taken.status_code == 409 and first in taken.json["detail"]
    assert taken.json["linked_record_id"] == first and taken.json["linked_record_kind"] == kind
    # One lead AND one opportunity per job order.
    r = c.post(f"/v1/{PLURALS[OTHER_KIND[kind]]}/{elsewhere}/job-orders", json={"job_order_id": welder},
               headers=auth())
    assert r.status_code == 201, r.json
    # A new job order with its link.
    r = c.post(f"/v1/{plural}/{second}/job-orders", json={"job_order": {"title": "Painter", "status": "open"}},
               headers=auth())
    assert r.status_code == 201, r.json
    painter = r.json["job_order_id"]
    assert r.json["job_order"]["status"] == "open" and linking.count(job_orders, job_orders.c.id == painter) == 1
    for body, field in (({"job_order_id": str(uuid.uuid4())}, "job_order_id"), ({}, "job_order_id"),
                        ({"job_order": {"title": ""}}, "job_order.title"),
                        ({"job_order": {"title": "X", "company_id": "nope"}}, "job_order.company_id")):
        r = c.post(f"/v1/{plural}/{second}/job-orders", json=body, headers=auth())
        assert r.status_code == 422 and field in [e["field"] for e in r.json["errors"]], (body, r.json)

    assert [x["job_order_id"] for x in items(c.get(f"/v1/{plural}/{first}/job-orders", headers=auth()))] == [welder]
    assert [x["job_order_id"] for x in items(c.get(f"/v1/{plural}/{second}/job-orders", headers=auth()))] == [
        painter]
    # Unlinked from the first, it may go to the second.
    assert c.delete(f"/v1/{plural}/{first}/job-orders/{welder}", headers=auth()).status_code == 204
    assert c.delete(f"/v1/{plural}/{first}/job-orders/{welder}", headers=auth()).status_code == 404
    assert c.post(f"/v1/{plural}/{second}/job-orders", json={"job_order_id": welder},
                  headers=auth()).status_code == 201

    assert linking.link_events(first) == [("linking.job_order.linked", f"{welder}:{first}"),
                                          ("linking.job_order.unlinked", f"{welder}:{first}")]
    assert linking.link_events(second) == [("linking.job_order.linked", f"{painter}:{second}"),
                                           ("linking.job_order.linked", f"{welder}:{second}")]
    created = [e for e in linking.events() if e.event_type == "linking.job_order.created"]
    assert [e.aggregate_id for e in created] == [painter] and created[0].linking_change.data["title"] == "Painter"
    assert [x["type"] for x in items(c.get(f"/v1/{plural}/{first}/timeline", headers=auth()))] == [
        "job_order_unlinked", "job_order_linked"]


# -- tabs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lead", "opportunity"])
def test_tabs_activities_placements_timeline(linking, kind):
    c, plural = linking.client, PLURALS[kind]
    record, other = linking.record(kind, "Mine"), linking.record(kind, "Other")
    owner = "lead_id" if kind == "lead" else "opportunity_id"
    t0 = utcnow() - dt.timedelta(hours=1)
    older = linking.insert(activities, type="task", subject="Call", at=t0, **{owner: record})
    newer = linking.insert(activities, type="note", subject="Noted", at=t0 + dt.timedelta(minutes=5),
                           **{owner: record})
    linking.insert(activities, type="note", subject="Not mine", **{owner: other})
    tab = items(c.get(f"/v1/{plural}/{record}/activities", headers=auth()))
    assert [a["id"] for a in tab] == [newer, older] and tab[0]["type"] == "note" and tab[0][owner] == record
    first = c.get(f"/v1/{plural}/{record}/activities", query_string={"page_size": 1}, headers=auth())
    rest = c.get(f"/v1/{plural}/{record}/activities",
                 query_string={"page_size": 1, "page_token": first.json["next_page_token"]}, headers=auth())
    assert [a["id"] for a in items(first) + items(rest)] == [newer, older]
    bad = c.get(f"/v1/{plural}/{record}/activities", query_string={"page_token": "forged"}, headers=auth())
    assert bad.status_code == 422

    linked, unlinked = linking.job_order("Linked"), linking.job_order("Unlinked")
    p1 = linking.insert(placements, job_order_id=linked, candidate_name="Eve", start_date=dt.date(2026, 1, 5), at=t0)
    p2 = linking.insert(placements, job_order_id=linked, candidate_name="Dan", at=t0 + dt.timedelta(minutes=1))
    linking.insert(placements, job_order_id=unlinked, candidate_name="Nobody")
    assert items(c.get(f"/v1/{plural}/{record}/placements", headers=auth())) == []
    assert c.post(f"/v1/{plural}/{record}/job-orders", json={"job_order_id": linked},
                  headers=auth()).status_code == 201
    tab = items(c.get(f"/v1/{plural}/{record}/placements", headers=auth()))
    assert [p["id"] for p in tab] == [p2, p1] and tab[1]["start_date"] == "2026-01-05"

    # The timeline: the records' events (at their occurred_at) and linking's own changes, newest first.
    state = PipelineRecord(id=record, kind=kind, title="Mine", owner_id="u1", office_id="o1", stage_id="s2",
                           version=2)
    linking.react(new_envelope(f"{kind}.stage_changed", kind, record, 2,
                               StageChanged(record=state, from_stage_id="s1", to_stage_id="s2", cause="user"),
                               occurred_at=t0))
    tl = items(c.get(f"/v1/{plural}/{record}/timeline", headers=auth()))
    assert [x["type"] for x in tl] == ["job_order_linked", "stage_changed"]
    assert tl[1]["at"] == t0.isoformat().replace("+00:00", "Z")
    assert set(tl[0]) == {"at", "type", "data"}
    first = c.get(f"/v1/{plural}/{record}/timeline", query_string={"page_size": 1}, headers=auth())
    rest = c.get(f"/v1/{plural}/{record}/timeline",
                 query_string={"page_size": 1, "page_token": first.json["next_page_token"]}, headers=auth())
    assert [x["type"] for x in items(first) + items(rest)] == ["job_order_linked", "stage_changed"]
    assert rest.json["next_page_token"] is None


# -- visibility and permissions --------------------------------------------------------------------

def test_visibility_and_permissions(linking):
    c = linking.client
    lead, opportunity = linking.record("lead", "Lead"), linking.record("opportunity", "Opportunity")
    far = linking.record("lead", "Other office", office="o2")
    anna = linking.contact("Anna", "Smit")
    body = {"contact_id": anna, "role_id": linking.roles["lead"]["OTHER"]}
    tabs = ("contacts", "job-orders", "activities", "placements", "timeline")

    # Another office's record is "not found", except for admins; an unknown one too.
    marketing = auth(("marketing",))
    for tab in tabs:
        assert c.get(f"/v1/leads/{far}/{tab}", headers=marketing).status_code == 404, tab
        assert c.get(f"/v1/leads/{far}/{tab}", headers=auth()).status_code == 200, tab
        assert c.get(f"/v1/leads/{uuid.uuid4()}/{tab}", headers=auth()).status_code == 404, tab
        assert c.get(f"/v1/leads/{lead}/{tab}").status_code == 401, tab
    assert c.post(f"/v1/leads/{far}/contacts", json=body, headers=marketing).status_code == 404
    assert c.post(f"/v1/opportunities/{lead}/contacts", json=body, headers=auth()).status_code == 404  # a lead

    # Changes need files:edit AND <records>:edit; reads files:view AND <records>:view.
    assert c.post(f"/v1/leads/{lead}/contacts", json=body, headers=auth(("viewer",))).status_code == 403
    assert c.post(f"/v1/leads/{lead}/contacts", json=body, headers=auth(("account_manager",))).status_code == 403
    assert c.post(f"/v1/leads/{lead}/contacts", json=body, headers=auth(("files_clerk",))).status_code == 403
    assert c.post(f"/v1/leads/{lead}/contacts", json=body, headers=auth(("lead_editor",))).status_code == 403
    assert c.post(f"/v1/leads/{lead}/job-orders", json={"job_order": {"title": "X"}},
                  headers=auth(("account_manager",))).status_code == 403
    assert linking.count(record_contacts) == 0 and linking.count(job_orders) == 0
    assert c.get(f"/v1/leads/{lead}/contacts", headers=auth(("files_clerk",))).status_code == 403
    assert c.get(f"/v1/leads/{lead}/contacts", headers=auth(("lead_editor",))).status_code == 403
    assert c.get(f"/v1/leads/{lead}/timeline", headers=auth(("viewer",))).status_code == 200
    opportunity_body = {"contact_id": anna, "role_id": linking.roles["opportunity"]["OTHER"]}
    assert c.post(f"/v1/opportunities/{opportunity}/contacts", json=opportunity_body,
                  headers=auth(("account_manager",))).status_code == 201
    r = c.post(f"/v1/leads/{lead}/contacts", json=body, headers=marketing)
    assert r.status_code == 201
    for method, path, payload in (("PATCH", f"/v1/leads/{lead}/contacts/{anna}", {"role_id": body["role_id"]}),
                                  ("DELETE", f"/v1/leads/{lead}/contacts/{anna}", None)):
        r = c.open(path, method=method, json=payload, headers=auth(("account_manager",)))
        assert r.status_code == 403, (method, r.json)
    assert linking.count(record_contacts) == 2


def test_another_office_cannot_unlink_or_learn_of_its_records(linking):
    """Unlinking from a record the caller cannot see is "not found", and changes nothing; a job
    order taken by such a record is a 409 that does not name it."""
    c, roles = linking.client, linking.roles["lead"]
    anna, bob = linking.contact("Anna", "Smit"), linking.contact("Bob", "Jansen")
    far = linking.record("lead", "Other office's", office="o2", contact_id=anna)
    welder = linking.job_order("Welder")
    o2 = auth(("marketing",), user="olga", office="o2")
    assert c.post(f"/v1/leads/{far}/contacts", json={"contact_id": bob, "role_id": roles["SIGN"]},
                  headers=o2).status_code == 201
    assert c.post(f"/v1/leads/{far}/job-orders", json={"job_order_id": welder}, headers=o2).status_code == 201
    before = (linking.events(), _links_of(linking, "lead", far), linking.timeline("lead", far))

    o1 = auth(("marketing",), user="ann", office="o1")
    for method, path, body in (("DELETE", f"/v1/leads/{far}/contacts/{bob}", None),
                               ("DELETE", f"/v1/leads/{far}/contacts/{anna}", None),
                               ("PATCH", f"/v1/leads/{far}/contacts/{bob}", {"role_id": roles["OTHER"]}),
                               ("DELETE", f"/v1/leads/{far}/job-orders/{welder}", None),
                               ("POST", f"/v1/leads/{far}/contacts", {"contact_id": bob, "role_id": roles["OTHER"]})):
        r = c.open(path, method=method, json=body, headers=o1)
        assert r.status_code == 404, (method, path, r.json)
        assert "Other office" not in r.get_data(as_text=True)
    mine = linking.record("lead", "Mine", office="o1")
    r = c.post(f"/v1/leads/{mine}/job-orders", json={"job_order_id": welder}, headers=o1)
    assert r.status_code == 409 and far not in r.get_data(as_text=True) and "linked_record_id" not in r.json, r.json
    assert (linking.events(), _links_of(linking, "lead", far), linking.timeline("lead", far)) == before
    r = c.post(f"/v1/leads/{mine}/job-orders", json={"job_order_id": welder}, headers=auth())  # admin sees it
    assert r.status_code == 409 and r.json["linked_record_id"] == far


# -- records reached from contacts and companies ---------------------------------------------------

def test_records_of_a_contact_and_of_a_company(linking):
    c, roles = linking.client, linking.roles
    acme = linking.company("Acme")
    anna = linking.contact("Anna", "Smit", company_id=acme)
    bob = linking.contact("Bob", "Other")
    linked = linking.record("lead", "B linked")
    far = linking.record("lead", "C other office", office="o2")
    own = linking.record("lead", "A own contact", contact_id=anna)
    company_lead = linking.record("lead", "D company's", company_id=acme)
    linking.record("lead", "E unrelated", company_id=linking.company("Other"), contact_id=bob)
    opportunity = linking.record("opportunity", "Deal")
    for kind, record, role in (("lead", linked, "OTHER"), ("lead", far, "SIGN"), ("opportunity", opportunity, "SIGN")):
        r = c.post(f"/v1/{PLURALS[kind]}/{record}/contacts", json={"contact_id": anna, "role_id": roles[kind][role]},
                   headers=auth())
        assert r.status_code == 201, r.json
    # A lead whose contact linking did not have when it heard of the lead: no link, only contact_id.
    late = str(uuid.uuid4())
    unlinked = linking.record("lead", "F contact came later", contact_id=late)
    linking.insert(contacts, id=late, first_name="Late", last_name="Comer")

    mine = items(c.get(f"/v1/contacts/{anna}/leads", headers=auth(("marketing",))))
    # Its own contact is the lead's MAIN contact, on its contacts tab.
    assert [(x["id"], x["role_id"]) for x in mine] == [(own, roles["lead"]["MAIN"]), (linked, roles["lead"]["OTHER"])]
    assert [(x["id"], x["role_id"]) for x in items(c.get(f"/v1/contacts/{late}/leads", headers=auth()))] == [
        (unlinked, None)]
    assert mine[1]["title"] == "B linked" and mine[1]["stage_id"] == "stage-new" and mine[1]["kind"] == "lead"
    everything = items(c.get(f"/v1/contacts/{anna}/leads", headers=auth()))
    assert [x["id"] for x in everything] == [own, linked, far]
    first = c.get(f"/v1/contacts/{anna}/leads", query_string={"page_size": 2}, headers=auth())
    rest = c.get(f"/v1/contacts/{anna}/leads", query_string={"page_size": 2,
                                                               "page_token": first.json["next_page_token"]},
                 headers=auth())
    assert [x["id"] for x in items(first) + items(rest)] == [own, linked, far]
    opportunities = items(c.get(f"/v1/contacts/{anna}/opportunities", headers=auth()))
    assert [(x["id"], x["role_id"]) for x in opportunities] == [(opportunity, roles["opportunity"]["SIGN"])]
    assert items(c.get(f"/v1/contacts/{bob}/opportunities", headers=auth())) == []

    # A company's leads: its own, those with a contact of the company (linked or the lead's own).
    company = items(c.get(f"/v1/companies/{acme}/leads", headers=auth(("marketing",))))
    assert [x["id"] for x in company] == [own, linked, company_lead]
    assert "role_id" not in company[0]
    assert [x["id"] for x in items(c.get(f"/v1/companies/{acme}/leads", headers=auth()))] == [
        own, linked, far, company_lead]

    assert c.get(f"/v1/contacts/{uuid.uuid4()}/leads", headers=auth()).status_code == 404
    assert c.get(f"/v1/companies/{uuid.uuid4()}/leads", headers=auth()).status_code == 404
    assert c.get(f"/v1/contacts/{anna}/leads", headers=auth(("files_clerk",))).status_code == 403
    assert c.get(f"/v1/contacts/{anna}/opportunities", headers=auth(("lead_editor",))).status_code == 403
    assert c.get(f"/v1/companies/{acme}/leads", headers=auth(("files_clerk",))).status_code == 403


# -- reactions to the records' events --------------------------------------------------------------

def test_a_deleted_record_loses_its_links(linking):
    c, roles = linking.client, linking.roles
    lead, opportunity = linking.record("lead", "Doomed"), linking.record("opportunity", "Stays")
    anna, welder = linking.contact("Anna", "Smit"), linking.job_order("Welder")
    for plural, record, kind in (("leads", lead, "lead"), ("opportunities", opportunity, "opportunity")):
        assert c.post(f"/v1/{plural}/{record}/contacts", json={"contact_id": anna, "role_id": roles[kind]["OTHER"]},
                      headers=auth()).status_code == 201
        assert c.post(f"/v1/{plural}/{record}/job-orders", json={"job_order_id": welder},
                      headers=auth()).status_code == 201
    call = linking.insert(activities, type="task", subject="Call", lead_id=lead)
    other_call = linking.insert(activities, type="task", subject="Call", opportunity_id=opportunity)

    deleted = new_envelope("lead.deleted", "lead", lead, 2, RecordDeleted(id=lead, kind="lead"))
    linking.react(deleted)
    linking.react(deleted)  # a redelivery finds nothing left to do
    assert linking.count(record_contacts, record_contacts.c.record_id == lead) == 0
    assert linking.count(record_job_orders, record_job_orders.c.record_id == lead) == 0
    assert linking.count(record_contacts, record_contacts.c.record_id == opportunity) == 1
    assert linking.count(record_job_orders, record_job_orders.c.record_id == opportunity) == 1
    with linking.db.transaction() as s:
        kept = s.execute(select(activities).where(activities.c.id.in_([call, other_call]))
                         .order_by(activities.c.subject, activities.c.lead_id)).all()
    by_id = {row.id: row for row in kept}
    assert by_id[call].lead_id is None and by_id[call].version == 2
    assert by_id[other_call].opportunity_id == opportunity and by_id[other_call].version == 1
    assert linking.timeline("lead", lead) == []
    assert len(linking.timeline("opportunity", opportunity)) == 2

    caused = [e for e in linking.events() if e.causation_id == deleted.event_id]
    assert sorted(e.event_type for e in caused) == ["linking.activity.updated", "linking.contact.unlinked",
                                                   "linking.job_order.unlinked"]
    assert all(e.linking_change.record_id == lead for e in caused)
    activity_event = next(e for e in caused if e.event_type == "linking.activity.updated")
    assert activity_event.aggregate_id == call and activity_event.linking_change.version == 2


def test_record_events_make_the_timeline_once(linking):
    record = linking.record("opportunity", "Deal")
    at = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)
    state = PipelineRecord(id=record, kind="opportunity", title="Deal", owner_id="u1", office_id="o1",
                           stage_id="s2", version=2)
    created = new_envelope("opportunity.created", "opportunity", record, 1, state, occurred_at=at)
    moved = StageChanged(record=state, from_stage_id="s1", to_stage_id="s2", from_stage_group_id="g1",
                         to_stage_group_id="g2", cause="trigger:t9")
    stage = new_envelope("opportunity.stage_changed", "opportunity", record, 2, moved,
                         occurred_at=at + dt.timedelta(minutes=1))
    group = new_envelope("opportunity.stage_group_changed", "opportunity", record, 2, moved,
                         occurred_at=at + dt.timedelta(minutes=1))
    membership = GroupMembershipChanged(record=state, group_id="vip")
    joined = new_envelope("opportunity.added_to_group", "opportunity", record, 3, membership,
                          occurred_at=at + dt.timedelta(minutes=2))
    left = new_envelope("opportunity.removed_from_group", "opportunity", record, 4, membership,
                        occurred_at=at + dt.timedelta(minutes=3))
    updated = new_envelope("opportunity.updated", "opportunity", record, 5, state)
    for envelope in (created, stage, stage, group, joined, left, updated, joined):
        linking.react(envelope)
    entries = linking.timeline("opportunity", record)
    assert [(e.type, e.event_id) for e in entries] == [
        ("removed_from_group", left.event_id), ("added_to_group", joined.event_id),
        ("stage_group_changed", group.event_id), ("stage_changed", stage.event_id),
        ("created", created.event_id)]
    assert entries[3].at == at + dt.timedelta(minutes=1)
    assert entries[3].data == {"from_stage_id": "s1", "to_stage_id": "s2", "cause": "trigger:t9", "by": "system"}
    assert entries[2].data["to_stage_group_id"] == "g2" and entries[1].data["group_id"] == "vip"
    tl = items(linking.client.get(f"/v1/opportunities/{record}/timeline", headers=auth()))
    assert tl[-1] == {"at": "2026-03-01T09:30:00Z", "type": "created",
                      "data": {"title": "Deal", "stage_id": "s2", "by": "system"}}
    assert linking.events() == []  # the timeline is not an event


def _conversion(lead: str, opportunity: str, at: dt.datetime | None = None) -> Envelope:
    conversion = LeadConverted(
        lead=PipelineRecord(id=lead, kind="lead", title="Convert me", owner_id="u1", office_id="o1",
                            stage_id="won", version=3, converted_opportunity_id=opportunity),
        opportunity=PipelineRecord(id=opportunity, kind="opportunity", title="Convert me", owner_id="u1",
                                   office_id="o1", stage_id="prospect", lead_id=lead))
    return new_envelope("lead.converted", "lead", lead, 3, conversion, occurred_at=at)


def _links_of(linking: Linking, kind: str, record_id: str) -> dict[str, tuple[str | None, str | None]]:
    with linking.db.transaction() as s:
        rows = s.execute(select(record_contacts).where(record_contacts.c.record_kind == kind,
                                                       record_contacts.c.record_id == record_id)).all()
    return {r.contact_id: (r.role_id, r.exclusive_role) for r in rows}


@pytest.mark.parametrize("first", ["conversion", "opportunity_event"])
def test_conversion_carries_every_contact_over_exactly_once(linking, first):
    c, roles = linking.client, linking.roles
    lead_only = linking.put_role("lead", "LEADONLY")
    anna, bob, carl, dora = (linking.contact("Anna", "Smit"), linking.contact("Bob", "Jansen"),
                             linking.contact("Carl", "Vos"), linking.contact("Dora", "Sign"))
    lead = linking.record("lead", "Convert me", contact_id=anna)  # Anna: the lead's MAIN contact
    busy = linking.record("opportunity", "Has the painter")
    welder, painter = linking.job_order("Welder"), linking.job_order("Painter")
    for contact, role in ((bob, roles["lead"]["OTHER"]), (carl, lead_only), (dora, roles["lead"]["SIGN"])):
        assert c.post(f"/v1/leads/{lead}/contacts", json={"contact_id": contact, "role_id": role},
                      headers=auth()).status_code == 201
    for order in (welder, painter):
        assert c.post(f"/v1/leads/{lead}/job-orders", json={"job_order_id": order}, headers=auth()).status_code == 201
    assert c.post(f"/v1/opportunities/{busy}/job-orders", json={"job_order_id": painter},
                  headers=auth()).status_code == 201

    opportunity = str(uuid.uuid4())
    at = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    converted, same_again = _conversion(lead, opportunity, at), _conversion(lead, opportunity, at)  # 2 event ids
    if first == "opportunity_event":  # the records consumer may apply the opportunity before the conversion
        linking.record("opportunity", "Convert me", record_id=opportunity, lead_id=lead, contact_id=anna)
    for envelope in (converted, converted, same_again):
        linking.react(envelope)
    if first == "conversion":
        linking.record("opportunity", "Convert me", record_id=opportunity, lead_id=lead, contact_id=anna)

    # Every contact came over: roles by code, Carl's LEADONLY has no counterpart -> no role.
    opp_roles = roles["opportunity"]
    assert _links_of(linking, "opportunity", opportunity) == {
        anna: (opp_roles["MAIN"], "MAIN"), bob: (opp_roles["OTHER"], None), carl: (None, None),
        dora: (opp_roles["SIGN"], "SIGN")}
    with linking.db.transaction() as s:
        orders = s.execute(select(record_job_orders.c.job_order_id, record_job_orders.c.record_id).where(
            record_job_orders.c.record_kind == "opportunity")).all()
    assert sorted(orders) == sorted([(welder, opportunity), (painter, busy)])  # the painter stays
    assert linking.count(record_contacts, record_contacts.c.record_id == lead) == 4  # the lead keeps its own

    events = [e for e in linking.events() if e.linking_change.record_id == opportunity]
    assert sorted((e.event_type, e.aggregate_id) for e in events) == sorted([
        ("linking.contact.linked", f"{anna}:{opportunity}"), ("linking.contact.linked", f"{bob}:{opportunity}"),
        ("linking.contact.linked", f"{carl}:{opportunity}"), ("linking.contact.linked", f"{dora}:{opportunity}"),
        ("linking.job_order.linked", f"{welder}:{opportunity}")])
    carried_carl = next(e for e in events if e.aggregate_id == f"{carl}:{opportunity}")
    assert MessageToDict(carried_carl.linking_change.data) == {"contact_id": carl, "role_id": None,
                                                               "role_dropped_from": "LEADONLY"}
    assert [e.type for e in linking.timeline("lead", lead)].count("converted") == 1
    entries = linking.timeline("opportunity", opportunity)
    assert sorted(e.type for e in entries) == [
        "contact_linked", "contact_linked", "contact_linked", "contact_linked", "converted_from_lead",
        "job_order_linked"]
    by_contact = {e.data["contact_id"]: e.data for e in entries if e.type == "contact_linked"}
    assert by_contact[carl]["role_dropped_from"] == "LEADONLY" and by_contact[carl]["role_id"] is None
    assert by_contact[bob] == {"contact_id": bob, "contact_name": "Bob Jansen", "role_id": opp_roles["OTHER"],
                               "by": "system", "cause": "conversion", "lead_id": lead}
    assert "role_dropped_from" not in by_contact[dora]
    assert by_contact[anna]["cause"] == ("main_contact" if first == "opportunity_event" else "conversion")
    lead_converted = next(e for e in linking.timeline("lead", lead) if e.type == "converted")
    assert lead_converted.data["opportunity_id"] == opportunity and lead_converted.at == at

    # The opportunity's tabs show what was carried over; Carl without a role.
    tab = items(c.get(f"/v1/opportunities/{opportunity}/contacts", headers=auth()))
    assert sorted((x["contact"]["first_name"], x["role"] and x["role"]["code"], x["role_id"]) for x in tab) == [
        ("Anna", "MAIN", opp_roles["MAIN"]), ("Bob", "OTHER", opp_roles["OTHER"]), ("Carl", None, None),
        ("Dora", "SIGN", opp_roles["SIGN"])]
    tab = items(c.get(f"/v1/opportunities/{opportunity}/job-orders", headers=auth()))
    assert [x["job_order"]["title"] for x in tab] == ["Welder"]


def test_conversion_into_an_existing_opportunity_keeps_its_main_and_sign(linking):
    c, roles = linking.client, linking.roles
    zed, yan = linking.contact("Zed", "Main"), linking.contact("Yan", "Sign")
    anna, bea, cas = linking.contact("Anna", "Smit"), linking.contact("Bea", "Sign"), linking.contact("Cas", "Other")
    opportunity = linking.record("opportunity", "Existing", contact_id=zed)
    assert c.post(f"/v1/opportunities/{opportunity}/contacts",
                  json={"contact_id": yan, "role_id": roles["opportunity"]["SIGN"]}, headers=auth()).status_code == 201
    lead = linking.record("lead", "Convert me", contact_id=anna)
    for contact, code in ((bea, "SIGN"), (cas, "OTHER"), (yan, "OTHER")):
        assert c.post(f"/v1/leads/{lead}/contacts", json={"contact_id": contact, "role_id": roles["lead"][code]},
                      headers=auth()).status_code == 201
    before = len(linking.events())

    linking.react(_conversion(lead, opportunity))
    linking.react(_conversion(lead, opportunity))

    # No contact is dropped; the opportunity keeps its own MAIN and SIGN; Yan, already on it, is untouched.
    opp_roles = roles["opportunity"]
    assert _links_of(linking, "opportunity", opportunity) == {
        zed: (opp_roles["MAIN"], "MAIN"), yan: (opp_roles["SIGN"], "SIGN"), anna: (None, None), bea: (None, None),
        cas: (opp_roles["OTHER"], None)}
    dropped = {e.data["contact_id"]: e.data.get("role_dropped_from")
               for e in linking.timeline("opportunity", opportunity)
               if e.type == "contact_linked" and e.data.get("cause") == "conversion"}
    assert dropped == {anna: "MAIN", bea: "SIGN", cas: None}
    linked = [e.linking_change for e in linking.events()[before:] if e.event_type == "linking.contact.linked"]
    assert sorted(ch.data["contact_id"] for ch in linked) == sorted([anna, bea, cas])


# -- the main contact follows the record's contact_id ----------------------------------------------

def _record_event(kind: str, record_id: str, version: int, contact_id: str = "", **kw: Any) -> Envelope:
    state = PipelineRecord(id=record_id, kind=kind, title="Deal", owner_id="u1", office_id="o1", stage_id="s1",
                           version=version, contact_id=contact_id, **kw)
    return new_envelope(f"{kind}.updated", kind, record_id, version, state, actor=Actor(user_id="u7", kind="user"))


@pytest.mark.parametrize("kind", ["lead", "opportunity"])
def test_the_main_contact_follows_the_records_contact_id(linking, kind):
    c, roles = linking.client, linking.roles[kind]
    base = f"/v1/{PLURALS[kind]}"
    anna, bob, carl = linking.contact("Anna", "Smit"), linking.contact("Bob", "Jansen"), linking.contact("Carl", "Vos")
    record = linking.record(kind, "Deal", contact_id=anna)
    tab = items(c.get(f"{base}/{record}/contacts", headers=auth()))
    assert [(x["contact_id"], x["role"]["code"]) for x in tab] == [(anna, "MAIN")]
    assert c.post(f"{base}/{record}/contacts", json={"contact_id": bob, "role_id": roles["SIGN"]},
                  headers=auth()).status_code == 201

    def apply(envelope: Envelope) -> None:
        with linking.db.transaction() as s:
            apply_record_event(s, envelope)

    # contact_id -> Bob, the signing authority: Bob becomes MAIN (its SIGN goes), Anna stays without a role.
    to_bob = _record_event(kind, record, 2, bob)
    apply(to_bob)
    apply(to_bob)  # a redelivery changes nothing
    assert _links_of(linking, kind, record) == {anna: (None, None), bob: (roles["MAIN"], "MAIN")}
    # An older event arriving late changes nothing either.
    apply(_record_event(kind, record, 1, anna))
    assert _links_of(linking, kind, record) == {anna: (None, None), bob: (roles["MAIN"], "MAIN")}
    # contact_id -> Carl (not linked yet): linked as MAIN; Bob stays without a role.
    apply(_record_event(kind, record, 3, carl))
    assert _links_of(linking, kind, record) == {anna: (None, None), bob: (None, None), carl: (roles["MAIN"], "MAIN")}
    # contact_id cleared: no MAIN contact any more, everyone stays.
    apply(_record_event(kind, record, 4))
    assert _links_of(linking, kind, record) == {anna: (None, None), bob: (None, None), carl: (None, None)}
    # A contact_id naming a contact linking does not have: nothing is linked, nothing fails.
    apply(_record_event(kind, record, 5, str(uuid.uuid4())))
    assert len(_links_of(linking, kind, record)) == 3
    apply(_record_event(kind, record, 6, anna))
    assert _links_of(linking, kind, record)[anna] == (roles["MAIN"], "MAIN")

    # Each change has its event and timeline entry, at the record event's time, by its actor.
    events = [(e.event_type, e.aggregate_id.split(":")[0], dict(e.linking_change.data).get("role_id"))
              for e in linking.events() if e.linking_change.record_id == record]
    assert events == [
        ("linking.contact.linked", anna, roles["MAIN"]), ("linking.contact.linked", bob, roles["SIGN"]),
        ("linking.contact.role_changed", anna, None), ("linking.contact.role_changed", bob, roles["MAIN"]),
        ("linking.contact.role_changed", bob, None), ("linking.contact.linked", carl, roles["MAIN"]),
        ("linking.contact.role_changed", carl, None), ("linking.contact.role_changed", anna, roles["MAIN"])]
    assert all(e.causation_id for e in linking.events()[2:] if e.linking_change.record_id == record)
    promoted = [e.data for e in linking.timeline(kind, record) if e.type == "contact_role_changed"]  # newest first
    assert promoted[0] == {"contact_id": anna, "from_role_id": None, "to_role_id": roles["MAIN"], "by": "u7",
                            "cause": "main_contact"}

    # From the tab: the main contact is not removed, not changed, not replaced.
    r = c.delete(f"{base}/{record}/contacts/{anna}", headers=auth())
    assert r.status_code == 409 and r.json["role_code"] == "MAIN", r.json
    assert c.patch(f"{base}/{record}/contacts/{anna}", json={"role_id": roles["OTHER"]},
                   headers=auth()).status_code == 409
    assert c.post(f"{base}/{record}/contacts", json={"contact_id": bob, "role_id": roles["MAIN"]},
                  headers=auth()).status_code == 409
    # ... but the record's own contact with MAIN is a confirmation (the wizard's link step): 200, nothing new.
    before = len(linking.events())
    r = c.post(f"{base}/{record}/contacts", json={"contact_id": anna, "role_id": roles["MAIN"]}, headers=auth())
    assert r.status_code == 200 and r.json["role"]["code"] == "MAIN" and len(linking.events()) == before
    # A former main contact (no role) may get an ordinary role, or be removed.
    r = c.patch(f"{base}/{record}/contacts/{bob}", json={"role_id": roles["OTHER"]}, headers=auth())
    assert r.status_code == 200 and r.json["role"]["code"] == "OTHER"
    assert c.delete(f"{base}/{record}/contacts/{carl}", headers=auth()).status_code == 204
    assert _links_of(linking, kind, record) == {anna: (roles["MAIN"], "MAIN"), bob: (roles["OTHER"], None)}


def test_the_main_contact_waits_for_the_main_role(linking):
    """A record heard of before the catalogue's MAIN role: its contact is linked without a role, and
    becomes MAIN with the record's next event; meanwhile POST with MAIN confirms it at once."""
    anna = linking.contact("Anna", "Smit")
    with linking.db.transaction() as s:
        s.execute(catalogue_view.delete().where(catalogue_view.c.code == "MAIN"))
    record = linking.record("lead", "Early", contact_id=anna)
    assert _links_of(linking, "lead", record) == {anna: (None, None)}
    main = linking.put_role("lead", "MAIN")
    with linking.db.transaction() as s:
        apply_record_event(s, _record_event("lead", record, 2, anna))
    assert _links_of(linking, "lead", record) == {anna: (main, "MAIN")}


# -- one MAIN and one SIGN per record under concurrency (PostgreSQL) ------------------------------

@pytest.mark.parametrize("first_look", ["real", "blind"])
def test_twenty_contacts_race_to_sign_one_lead(pg_url, monkeypatch, first_look):
    if first_look == "blind":
        # Every request's friendly first look sees no SIGN contact, as if all had read before any
        # committed: the UNIQUE constraint alone must give 1 x 201 and 19 x 409.
        real, seen = links.exclusive_link, threading.local()

        def blind_first_look(session: Any, kind: str, record_id: str, code: str) -> Any:
            looks = getattr(seen, "looks", 0)
            seen.looks = looks + 1
            return None if looks == 0 else real(session, kind, record_id, code)

        monkeypatch.setattr(links, "exclusive_link", blind_first_look)
    linking = make_linking(pg_url)
    try:
        lead = linking.record("lead", "Signed once")
        people = [linking.contact("Signer", str(i)) for i in range(20)]
        sign = linking.roles["lead"]["SIGN"]
        barrier = threading.Barrier(20)
        statuses: list[int] = []
        answers: list[dict[str, Any]] = []
        lock = threading.Lock()

        def post(contact: str) -> None:
            with linking.app.test_client() as client:  # the request runs in this thread
                barrier.wait()
                r = client.post(f"/v1/leads/{lead}/contacts", json={"contact_id": contact, "role_id": sign},
                                headers=auth())
                with lock:
                    statuses.append(r.status_code)
                    answers.append(r.json)

        threads = [threading.Thread(target=post, args=(person,)) for person in people]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [201] + [409] * 19, answers
        assert all(a["role_code"] == "SIGN" for a in answers if a.get("status") == 409), answers
        assert _links_of(linking, "lead", lead) == {next(a["contact_id"] for a in answers if "role" in a):
                                                    (sign, "SIGN")}
        assert len([e for e in linking.events() if e.event_type == "linking.contact.linked"]) == 1
        assert len(linking.timeline("lead", lead)) == 1
    finally:
        close(linking)


# -- the job order rule under concurrency (PostgreSQL) --------------------------------------------

@pytest.mark.parametrize("first_look", ["real", "blind"])
def test_twenty_leads_race_for_one_job_order(pg_url, monkeypatch, first_look):
    if first_look == "blind":
        # Every request's friendly first look sees no link, as if all had read before any
        # committed: the UNIQUE constraint alone must give 1 x 201 and 19 x 409.
        real, seen = links.job_order_link_of_kind, threading.local()

        def blind_first_look(session: Any, job_order_id: str, kind: str) -> Any:
            looks = getattr(seen, "looks", 0)
            seen.looks = looks + 1
            return None if looks == 0 else real(session, job_order_id, kind)

        monkeypatch.setattr(links, "job_order_link_of_kind", blind_first_look)
    linking = make_linking(pg_url)
    try:
        leads = [linking.record("lead", f"Lead {i}") for i in range(20)]
        welder = linking.job_order("Welder")
        barrier = threading.Barrier(20)
        statuses: list[int] = []
        details: list[str | None] = []
        lock = threading.Lock()

        def post(lead: str) -> None:
            with linking.app.test_client() as client:  # the request runs in this thread
                barrier.wait()
                r = client.post(f"/v1/leads/{lead}/job-orders", json={"job_order_id": welder}, headers=auth())
                with lock:
                    statuses.append(r.status_code)
                    details.append(r.json.get("detail"))

        threads = [threading.Thread(target=post, args=(lead,)) for lead in leads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [201] + [409] * 19, details
        assert all("already linked to lead" in d for d in details if d), details
        assert linking.count(record_job_orders, record_job_orders.c.job_order_id == welder) == 1
        linked = [e for e in linking.events() if e.event_type == "linking.job_order.linked"]
        assert len(linked) == 1
        assert sum(len(linking.timeline("lead", lead)) for lead in leads) == 1
    finally:
        close(linking)

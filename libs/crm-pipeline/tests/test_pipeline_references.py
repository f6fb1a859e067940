"""Issue 15 in the records services' own apps and workers' handlers, on SQLite and PostgreSQL:
reference checks against what the service knows of linking's companies and contacts, deleted
files cleared from records, ``lead_id`` read-only, the office rule on copy and bulk, converting
into an existing opportunity, converted leads staying in end stages, and printing with a
template tied to no stage.

The services' read models are fed with events as their workers would apply them: the
catalogue's, linking's (``LinkingChange``) and the opportunities'.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import Table, select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.linking_pb2 import LinkingChange
from crm.events.v1.records_pb2 import RecordCommand
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token
from crm_leads.kind import LEAD
from crm_opportunities.kind import OPPORTUNITY
from crm_pipeline import conversion
from crm_pipeline.commands import command_handler
from crm_pipeline.conversion import conversion_handler
from crm_pipeline.kind import RecordKind
from crm_pipeline.records import Records
from crm_pipeline.references import OpportunityViews, file_handler, opportunity_handler

pytestmark = pytest.mark.integration
SECRET = "references-test-secret-long-enough-for-hs256"
KINDS = {"leads": LEAD, "opportunities": OPPORTUNITY}
HTML = "text/html"


def auth(roles: tuple[str, ...] = ("admin",), user: str = "u1", office: str = "o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id=user, name=user.upper(), office_id=office,
                                                     roles=list(roles))}


MARKETER = auth(("marketing",), user="m1")  # leads:*, opportunities:view, files:*
SELLER = auth(("marketing", "account_manager"), user="s1")  # may edit leads and opportunities


class Service:
    """One records service: its app, its database, its worker's handlers."""

    def __init__(self, name: str, db_url: str) -> None:
        spec = find_service(name)
        settings = load_settings("domain", {"CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": db_url,
                                            "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET,
                                            "CRM_LOG_FORMAT": "text"})
        migrate(spec, settings)
        self.name = name
        self.kind: RecordKind = KINDS[name]
        tables = spec.metadata.tables
        self.tables: dict[str, Table] = {key: tables[table] for key, table in (
            ("records", name), ("stage_history", "stage_history"), ("record_groups", "record_groups"),
            ("attachments", "attachments"), ("known_files", "known_files"))}
        if name == "leads":
            self.tables["opportunity_views"] = tables["opportunity_views"]
        self.records = Records(self.kind, self.tables)
        self.client = spec.build_app(settings).test_client()
        self.db = Database(db_url)
        self.base = f"/v1/{name}"
        self.seen = 0  # outbox rows already looked at (``new_events``)

    # -- feeding the read models -----------------------------------------------------------------

    def apply(self, handler: Any, envelope: Envelope) -> None:
        with self.db.transaction() as s:
            handler(s, envelope)

    def put(self, kind: str, entity: str, code: str = "", *, active: bool = True, index: int = 0,
            **attributes: Any) -> str:
        entry_id = str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        names = {"en": code.title()} if code else {}
        entry = CatalogueEntry(id=entry_id, kind=kind, entity=entity, code=code, names=names, index=index,
                               active=active, version=1, attributes=attrs)
        aggregate = entity if entity in ("stage", "template") else "table_entry"
        self.apply(apply_catalogue_event, new_envelope(f"catalogue.{aggregate}.updated", aggregate, entry_id, 1,
                                                       entry))
        return entry_id

    def seed(self, kind: str) -> dict[str, str]:
        ids = {"open": self.put(kind, "stage_groups", "OPEN"), "closed": self.put(kind, "stage_groups", "CLOSED")}
        ids["new"] = self.put(kind, "stage", "NEW", index=1, is_default=True, stage_group_id=ids["open"])
        ids["next"] = self.put(kind, "stage", "NEXT", index=2, stage_group_id=ids["open"])
        ids["won"] = self.put(kind, "stage", "WON", index=3, is_end=True, is_default_end=True,
                              stage_group_id=ids["closed"])
        ids["lost"] = self.put(kind, "stage", "LOST", index=4, is_end=True, stage_group_id=ids["closed"])
        return ids

    def file(self, entity: str, file_id: str | None = None, *, what: str = "created", version: int = 1) -> str:
        """linking.<entity>.<what> as linking publishes it."""
        file_id = file_id or str(uuid.uuid4())
        change = LinkingChange(entity=entity, id=file_id, version=version, deleted=what == "deleted")
        change.data.update({"id": file_id, "version": version})
        self.apply(file_handler(self.records), new_envelope(f"linking.{entity}.{what}", entity, file_id, version,
                                                            change, producer="linking"))
        return file_id

    # -- using the app ---------------------------------------------------------------------------

    def create(self, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        r = self.client.post(self.base, json={"title": "A record", **body}, headers=headers or auth())
        assert r.status_code == 201, r.json
        return dict(r.json)

    def get(self, record_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"{self.base}/{record_id}", headers=auth()).json)

    def new_events(self) -> list[Envelope]:
        with self.db.transaction() as s:
            rows = s.execute(select(OUTBOX.c.id, OUTBOX.c.payload).where(OUTBOX.c.id > self.seen)
                             .order_by(OUTBOX.c.id)).all()
        if rows:
            self.seen = rows[-1].id
        return [decode(r.payload) for r in rows]


@pytest.fixture
def services(any_db_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[Service] = []

    def make(name: str) -> Service:
        if not made:
            url = any_db_url
        elif any_db_url.startswith("sqlite"):
            url = any_db_url.replace(".sqlite3", f"{len(made)}.sqlite3")
        else:
            url = request.getfixturevalue("postgres").create_database("t_" + uuid.uuid4().hex[:16])
        made.append(Service(name, url))
        return made[-1]

    yield make
    for svc in made:
        svc.db.dispose()


def _field(r: Any) -> str:
    assert r.status_code == 422, (r.status_code, r.json)
    return str(r.json["errors"][0]["field"])


# -- 1. references checked -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_company_and_contact_must_exist(services, name):
    svc = services(name)
    ids = svc.seed(svc.kind.kind)
    unknown = str(uuid.uuid4())
    for field in ("company_id", "contact_id"):
        assert _field(svc.client.post(svc.base, json={"title": "x", field: unknown}, headers=auth())) == field
    company, contact = svc.file("company"), svc.file("contact")
    assert _field(svc.client.post(svc.base, json={"title": "x", "company_id": contact}, headers=auth())) \
        == "company_id"  # a contact is no company
    record = svc.create(company_id=company, contact_id=contact)
    url = f"{svc.base}/{record['id']}"
    assert _field(svc.client.patch(url, json={"contact_id": unknown}, headers=auth())) == "contact_id"
    assert svc.client.patch(url, json={"company_id": None}, headers=auth()).status_code == 200
    # Copy: the copied references and the changes are checked alike.
    assert _field(svc.client.post(f"{url}/copy", json={"company_id": unknown}, headers=auth())) == "company_id"
    copy = svc.client.post(f"{url}/copy", json={}, headers=auth())
    assert copy.status_code == 201 and copy.json["contact_id"] == contact
    # A file linking has deleted is refused like one it never had.
    svc.file("company", company, what="deleted", version=2)
    assert _field(svc.client.post(svc.base, json={"title": "x", "company_id": company}, headers=auth())) \
        == "company_id"
    if svc.kind is LEAD:  # the conversion's fields for the opportunity are checked too
        r = svc.client.post(f"{url}/convert", json={"contact_id": unknown}, headers=auth())
        assert r.status_code == 422 and r.json["errors"][0]["field"] == "contact_id", r.json
        assert ids["won"]


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_a_deleted_company_or_contact_is_cleared_from_its_records(services, name):
    svc = services(name)
    svc.seed(svc.kind.kind)
    company, contact, other = svc.file("company"), svc.file("contact"), svc.file("company")
    svc.file("company", company, what="updated", version=2)
    one = svc.create(company_id=company, contact_id=contact)
    two = svc.create(company_id=company)
    three = svc.create(company_id=other, contact_id=contact)
    svc.new_events()
    svc.file("company", company, what="deleted", version=3)
    assert (svc.get(one["id"])["company_id"], svc.get(one["id"])["contact_id"]) == (None, contact)
    assert svc.get(one["id"])["version"] == 2 and svc.get(two["id"])["company_id"] is None
    assert svc.get(three["id"])["company_id"] == other
    events = svc.new_events()
    assert sorted(e.aggregate_id for e in events) == sorted([one["id"], two["id"]])
    for event in events:
        assert event.event_type == svc.kind.event_type("updated") and event.record.company_id == ""
        assert event.actor.kind == "system"
    # A redelivered or late, older event changes nothing: a deletion is final.
    svc.file("company", company, what="deleted", version=3)
    svc.file("company", company, what="updated", version=2)
    assert svc.new_events() == []
    assert _field(svc.client.post(svc.base, json={"title": "x", "company_id": company}, headers=auth())) \
        == "company_id"
    svc.file("contact", contact, what="deleted", version=2)
    assert svc.get(one["id"])["contact_id"] is None and svc.get(three["id"])["contact_id"] is None


# -- 3. lead_id read-only --------------------------------------------------------------------------

def test_lead_id_is_read_only(services):
    svc = services("opportunities")
    svc.seed("opportunity")
    lead_id = str(uuid.uuid4())
    r = svc.client.post(svc.base, json={"title": "x", "lead_id": lead_id}, headers=auth())
    assert _field(r) == "lead_id" and "Read-only" in r.json["errors"][0]["message"]
    record = svc.create()
    url = f"{svc.base}/{record['id']}"
    for method, path in (("patch", url), ("post", f"{url}/copy")):
        assert _field(getattr(svc.client, method)(path, json={"lead_id": lead_id}, headers=auth())) == "lead_id"
    assert svc.client.patch(url, json={"lead_id": None}, headers=auth()).status_code == 422
    doc = svc.client.get("/openapi.json").json
    schemas = doc["components"]["schemas"]
    assert schemas["Opportunity"]["properties"]["lead_id"]["readOnly"] is True
    assert "lead_id" not in schemas["OpportunityCreate"]["properties"]
    assert "lead_id" not in schemas["OpportunityPatch"]["properties"]


# -- 4. the office rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_another_office_needs_the_admin_role_on_create_copy_and_bulk(services, name):
    svc = services(name)
    ids = svc.seed(svc.kind.kind)
    editor = auth(("marketing",) if svc.kind is LEAD else ("account_manager",), user="e1")
    assert svc.client.post(svc.base, json={"title": "x", "office_id": "o2"}, headers=editor).status_code == 403
    mine = svc.create(editor)
    url = f"{svc.base}/{mine['id']}"
    assert svc.client.post(f"{url}/copy", json={"office_id": "o2"}, headers=editor).status_code == 403
    same = svc.client.post(f"{url}/copy", json={"office_id": "o1"}, headers=editor)
    assert same.status_code == 201 and same.json["office_id"] == "o1"
    admin_copy = svc.client.post(f"{url}/copy", json={"office_id": "o2"}, headers=auth())
    assert admin_copy.status_code == 201 and admin_copy.json["office_id"] == "o2"
    elsewhere = svc.create(auth(), office_id="o2")
    # Bulk: records the caller cannot see are "not found" items; nothing moves to another office.
    for action, extra in (("assign_owner", {"owner_id": "someone"}), ("set_stage", {"stage_id": ids["next"]})):
        r = svc.client.post(f"{svc.base}/bulk", json={"ids": [mine["id"], elsewhere["id"], "missing"],
                                                      "action": action, **extra}, headers=editor)
        assert r.status_code == 200, r.json
        assert [(x["status"], x["error"]) for x in r.json["results"]] == [
            ("ok", None), ("error", "not found"), ("error", "not found")]
    assert svc.get(mine["id"])["office_id"] == "o1" and svc.get(mine["id"])["owner_id"] == "someone"
    assert svc.get(elsewhere["id"])["owner_id"] != "someone"
    r = svc.client.post(f"{svc.base}/bulk", json={"ids": [mine["id"]], "action": "assign_owner", "owner_id": "x",
                                                  "office_id": "o2"}, headers=editor)
    assert _field(r) == "office_id"


# -- 5. conversion -----------------------------------------------------------------------------------

def _opportunity_event(svc: Service, record: dict[str, Any]) -> Envelope:
    """The opportunities service's event about ``record`` (its state), as the leads worker gets it."""
    from crm.events.v1.records_pb2 import PipelineRecord

    state = PipelineRecord(id=record["id"], kind="opportunity", title=record["title"], office_id=record["office_id"],
                           owner_id=record["owner_id"], stage_id=record["stage"]["id"], version=record["version"],
                           lead_id=record.get("lead_id") or "")
    return new_envelope("opportunity.updated", "opportunity", record["id"], record["version"], state)


def test_converting_into_an_existing_opportunity(services):
    leads, opps = services("leads"), services("opportunities")
    lead_ids, opp_ids = leads.seed("lead"), leads.seed("opportunity")
    opps.seed("opportunity")
    views = opportunity_handler(OpportunityViews(leads.tables["opportunity_views"]))
    company, contact, own_contact = (opps.file(e) for e in ("company", "contact", "contact"))
    for file_id, entity in ((company, "company"), (contact, "contact")):
        leads.file(entity, file_id)
    target = opps.create(contact_id=own_contact)
    elsewhere = opps.create(office_id="o2")
    for record in (target, elsewhere):
        leads.apply(views, _opportunity_event(opps, record))
    lead = leads.create(SELLER, company_id=company, contact_id=contact)
    url = f"/v1/leads/{lead['id']}/convert"

    def convert(body: dict[str, Any], headers: dict[str, str] = SELLER) -> Any:
        return leads.client.post(url, json=body, headers=headers)

    assert convert({"opportunity_id": target["id"]}, MARKETER).status_code == 403  # opportunities:view only
    assert convert({"opportunity_id": str(uuid.uuid4())}).status_code == 404
    assert convert({"opportunity_id": elsewhere["id"]}).status_code == 404  # another office's
    assert convert({"opportunity_id": target["id"], "title": "x"}).status_code == 422
    assert leads.get(lead["id"])["converted_opportunity_id"] is None  # nothing half-done
    leads.new_events()
    r = convert({"opportunity_id": target["id"]})
    assert r.status_code == 201, r.json
    assert r.json["opportunity"] == {"id": target["id"]} and r.json["warnings"] == []
    assert r.json["lead"]["converted_opportunity_id"] == target["id"]
    assert r.json["lead"]["stage"]["id"] == lead_ids["won"]
    [converted] = [e for e in leads.new_events() if e.event_type == "lead.converted"]
    assert converted.lead_converted.lead.converted_opportunity_id == target["id"]
    assert converted.lead_converted.opportunity.id == target["id"]
    assert convert({"opportunity_id": target["id"]}).status_code == 409  # converted already
    other = leads.create(SELLER)
    r = leads.client.post(f"/v1/leads/{other['id']}/convert", json={"opportunity_id": target["id"]}, headers=SELLER)
    assert r.status_code == 409 and r.json["lead_id"] == lead["id"]  # the opportunity has its lead

    # The opportunities service links it: lead_id, the company (it had none), its own contact kept.
    handle = conversion_handler(opps.records)
    opps.new_events()
    for _ in range(2):  # a redelivery (or the same conversion again) changes nothing more
        opps.apply(handle, converted)
    linked = opps.get(target["id"])
    assert (linked["lead_id"], linked["company_id"], linked["contact_id"]) == (lead["id"], company, own_contact)
    assert linked["version"] == target["version"] + 1 and linked["stage"]["id"] == target["stage"]["id"]
    [updated] = opps.new_events()
    assert updated.event_type == "opportunity.updated" and updated.actor.kind == "system"
    with opps.db.transaction() as s:
        assert len(s.execute(select(opps.records.table)).all()) == 2  # nothing created
    # The leads service learns of it like of any opportunity: a later conversion into it is 409 too.
    leads.apply(views, _opportunity_event(opps, linked))
    assert opp_ids


def test_a_new_opportunity_does_not_take_a_file_deleted_meanwhile(services):
    leads, opps = services("leads"), services("opportunities")
    leads.seed("lead"), leads.seed("opportunity")
    company = leads.file("company")
    opps.file("company", company)
    lead = leads.create(company_id=company)
    leads.new_events()
    assert leads.client.post(f"/v1/leads/{lead['id']}/convert", json={}, headers=auth()).status_code == 201
    [converted] = [e for e in leads.new_events() if e.event_type == "lead.converted"]
    opps.file("company", company, what="deleted", version=2)
    opps.apply(conversion_handler(opps.records), converted)
    created = opps.get(converted.lead_converted.opportunity.id)
    assert created["lead_id"] == lead["id"] and created["company_id"] is None


def test_two_leads_racing_for_one_opportunity(services, monkeypatch):
    """Two conversions into one opportunity at the same moment both pass the checks (neither
    sees the other's uncommitted lead); the unique index on converted_opportunity_id lets one
    commit, the other is 409 with nothing of it left. The race is played by skipping the check."""
    leads = services("leads")
    leads.seed("lead")
    views = opportunity_handler(OpportunityViews(leads.tables["opportunity_views"]))
    opportunity = {"id": str(uuid.uuid4()), "title": "o", "office_id": "o1", "owner_id": "u1", "stage": {"id": "s"},
                   "version": 1}
    leads.apply(views, _opportunity_event(leads, opportunity))
    first, second = leads.create(SELLER), leads.create(SELLER)
    r = leads.client.post(f"/v1/leads/{first['id']}/convert", json={"opportunity_id": opportunity["id"]},
                          headers=SELLER)
    assert r.status_code == 201, r.json
    monkeypatch.setattr(conversion, "_existing_opportunity", lambda *args: None)
    leads.new_events()
    r = leads.client.post(f"/v1/leads/{second['id']}/convert", json={"opportunity_id": opportunity["id"]},
                          headers=SELLER)
    assert r.status_code == 409 and "another lead" in r.json["detail"], r.json
    after = leads.get(second["id"])
    assert after["converted_opportunity_id"] is None and after["version"] == 1
    assert leads.new_events() == []


def test_a_converted_lead_stays_in_end_stages(services):
    leads = services("leads")
    ids = leads.seed("lead")
    leads.seed("opportunity")
    lead = leads.create()
    url = f"/v1/leads/{lead['id']}"
    assert leads.client.post(f"{url}/convert", json={}, headers=auth()).status_code == 201
    r = leads.client.patch(url, json={"stage_id": ids["next"]}, headers=auth())
    assert r.status_code == 409 and "end stages" in r.json["detail"], r.json
    assert leads.client.patch(url, json={"title": "Still editable"}, headers=auth()).status_code == 200
    moved = leads.client.patch(url, json={"stage_id": ids["lost"]}, headers=auth())  # another end stage
    assert moved.status_code == 200 and moved.json["stage"]["id"] == ids["lost"]
    r = leads.client.post("/v1/leads/bulk", json={"ids": [lead["id"]], "action": "set_stage",
                                                  "stage_id": ids["new"]}, headers=auth())
    assert r.json["results"][0]["status"] == "error" and "end stages" in r.json["results"][0]["error"]
    # A trigger's command is refused the same way: logged, not retried, not dead-lettered.
    command = new_envelope("lead.command.set_stage", "lead", lead["id"], 0,
                           RecordCommand(record_id=lead["id"], kind="lead", action="set_stage", stage_id=ids["new"],
                                         trigger_id="t1"), trigger_depth=1)
    leads.apply(command_handler(leads.records), command)
    assert leads.get(lead["id"])["stage"]["id"] == ids["lost"]


# -- 6. printing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_a_template_tied_to_no_stage_prints_on_any_record_of_its_kind(services, name):
    svc = services(name)
    ids = svc.seed(svc.kind.kind)
    other = "opportunity" if svc.kind is LEAD else "lead"

    def template(body: str, stage_ids: list[str], visible_at: str | None) -> str:
        return svc.put("", "template", template_kind="print", name="T", body=body, visible_at=visible_at,
                       stage_ids=stage_ids)

    anywhere = template("<p>{{ record.title }}</p>", [], f"{svc.kind.kind}_stage")
    no_stage_at_all = template("<p>any {{ record.title }}</p>", [], None)
    tied = template("x", [ids["next"]], f"{svc.kind.kind}_stage")
    other_kind = template("x", [], f"{other}_stage")
    record = svc.create(title="Printed")

    def print_(template_id: str) -> Any:
        return svc.client.post(f"{svc.base}/{record['id']}/print", json={"template_id": template_id},
                               headers={**auth(), "Accept": HTML})

    for template_id in (anywhere, no_stage_at_all):
        r = print_(template_id)
        assert r.status_code == 200 and "Printed" in r.get_data(as_text=True), r.get_data(as_text=True)
    for template_id in (tied, other_kind):
        assert _field(print_(template_id)) == "template_id"
    # The list stays "templates linked to the record's current stage".
    listed = svc.client.get(f"{svc.base}/{record['id']}/templates", headers=auth()).json["items"]
    assert listed == []

"""Lead conversion and the records' references through the gateway, on the real platform
(PostgreSQL, Kafka, every service's api and worker).

- every contact of the lead comes over to the opportunity, one whose lead role has no
  opportunity counterpart with no role (``role_id`` null) and a warning in the 201;
- converting into an existing opportunity; a second conversion is 409; a converted lead stays
  in end stages;
- ``company_id``/``contact_id`` must name an existing company/contact (422), and one created a
  moment ago counts at once (the consistency token); a copy into another office needs the admin
  role (403);
- the opportunities worker killed while a conversion is under way leaves nothing half-done:
  after its restart, and after the conversion's event is delivered again (with its own id and
  with another), the opportunity and every carried link exist exactly once.

Nothing sleeps for the client's own writes: the clients send back the ``Consistency-Token`` of
their last write. Only the killed worker's recovery and the redelivered events (which no token
covers) are waited for, the former as the contract says (503 with Retry-After, then retry), the
latter on the consumers' own offsets in their databases.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from confluent_kafka import Producer
from sqlalchemy import select

from crm.events.v1.envelope_pb2 import Envelope
from crm_events.envelope import decode, encode
from crm_kafka.outbox import OUTBOX
from crm_kit.consistency import OFFSETS
from crm_kit.db import Database

pytestmark = pytest.mark.e2e

TOKEN = "Consistency-Token"
PROBLEM = "application/problem+json"


class Caller:
    """A client that sends back the Consistency-Token of its last write (``token=False``: none)."""

    def __init__(self, platform: Any, roles: tuple[str, ...] = ("admin",), user: str = "conv-admin",
                 office: str = "office-1", token: bool = True) -> None:
        self.base = platform.gateway_url
        self.headers = platform.auth(roles, user=user, office=office)
        self.keep = token
        self.token: str | None = None

    def __call__(self, method: str, path: str, expect: int | None = None, **kw: Any) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        if self.keep and self.token:
            headers.setdefault(TOKEN, self.token)
        r = requests.request(method, self.base + path, headers=headers, timeout=60, **kw)
        if self.keep and TOKEN in r.headers:
            self.token = r.headers[TOKEN]
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def post(self, path: str, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        return dict(self("POST", path, expect, json=body).json())

    def get(self, path: str) -> dict[str, Any]:
        return dict(self("GET", path, 200).json())

    def items(self, path: str) -> list[dict[str, Any]]:
        return list(self.get(path)["items"])


def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


def stage(c: Caller, kind: str, code: str) -> dict[str, Any]:
    return next(s for s in c.items(f"/v1/{kind}-stages?page_size=200") if s["code"] == code)


def role(c: Caller, kind: str, code: str) -> dict[str, Any]:
    return c.post(f"/v1/{kind}-tables/roles", {"names": {"en": f"Role {code}"}, "code": code})


def contacts(c: Caller, plural: str, record_id: str) -> dict[str, dict[str, Any]]:
    """The record's contacts tab by contact id (each contact at most once: a repeat fails)."""
    listed = c.items(f"/v1/{plural}/{record_id}/contacts?page_size=200")
    by_id = {x["contact_id"]: x for x in listed}
    assert len(by_id) == len(listed), listed
    return by_id


class Lead:
    """A lead with a company, its main contact, a contact with a role both kinds have, one whose
    lead role has no opportunity counterpart, and a job order - all through the gateway."""

    def __init__(self, c: Caller, shared: str, dropped: str) -> None:
        t = tag()
        self.company = c.post("/v1/companies", {"name": f"Convert Co {t}"})
        self.main = c.post("/v1/contacts", {"first_name": "Mia", "last_name": f"Main {t}",
                                            "company_id": self.company["id"]})
        self.lead = c.post("/v1/leads", {"title": f"Converts {t}", "company_id": self.company["id"],
                                         "contact_id": self.main["id"]})
        base = f"/v1/leads/{self.lead['id']}"
        self.buyer = c.post(f"{base}/contacts", {"contact": {"first_name": "Bo", "last_name": f"Buyer {t}"},
                                                 "role_id": shared})["contact_id"]
        self.cfo = c.post(f"{base}/contacts", {"contact": {"first_name": "Cas", "last_name": f"Cfo {t}"},
                                               "role_id": dropped})["contact_id"]
        self.job_order = c.post(f"{base}/job-orders", {"job_order": {"title": f"Welder {t}"}})["job_order_id"]
        self.id = self.lead["id"]


@pytest.fixture(scope="module")
def roles(platform) -> dict[str, dict[str, Any]]:
    """A role code both kinds have, and a lead role code no opportunity role has."""
    c = Caller(platform)
    shared, dropped = f"BUY{tag()}", f"CFO{tag()}"
    return {"lead_shared": role(c, "lead", shared), "opportunity_shared": role(c, "opportunity", shared),
            "lead_dropped": role(c, "lead", dropped)}


def _carried(c: Caller, lead: Lead, opportunity_id: str, roles: dict[str, dict[str, Any]]) -> None:
    """Every contact of the lead is on the opportunity once: the shared role mapped, the other none."""
    on_lead = contacts(c, "leads", lead.id)
    on_opportunity = contacts(c, "opportunities", opportunity_id)
    assert set(on_lead) <= set(on_opportunity), (on_lead.keys(), on_opportunity.keys())
    assert {lead.buyer, lead.cfo} <= set(on_lead)
    assert on_opportunity[lead.buyer]["role_id"] == roles["opportunity_shared"]["id"]
    assert on_opportunity[lead.cfo]["role_id"] is None and on_opportunity[lead.cfo]["role"] is None
    jobs = c.items(f"/v1/opportunities/{opportunity_id}/job-orders")
    assert [x["job_order_id"] for x in jobs] == [lead.job_order]


def _dropped_warning(lead: Lead, roles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"code": "contact_role_dropped", "contact_id": lead.cfo, "lead_role_id": roles["lead_dropped"]["id"],
            "lead_role_code": roles["lead_dropped"]["code"]}


def test_every_contact_comes_over_and_a_dropped_role_is_a_warning(platform, roles):
    c = Caller(platform)
    lead = Lead(c, roles["lead_shared"]["id"], roles["lead_dropped"]["id"])
    r = c("POST", f"/v1/leads/{lead.id}/convert", json={"amount": "1500.00", "currency": "EUR"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"lead", "opportunity", "warnings"}
    opportunity = body["opportunity"]
    assert body["lead"]["converted_opportunity_id"] == opportunity["id"] and body["lead"]["stage"]["is_end"]
    assert (opportunity["lead_id"], opportunity["company_id"], opportunity["contact_id"], opportunity["amount"]) \
        == (lead.id, lead.company["id"], lead.main["id"], "1500.00")
    assert [{k: w[k] for k in ("code", "contact_id", "lead_role_id", "lead_role_code")}
            for w in body["warnings"]] == [_dropped_warning(lead, roles)]
    assert lead.cfo not in str([w["message"] for w in body["warnings"]])  # named by name, not by id
    _carried(c, lead, opportunity["id"], roles)  # the 201's token covers linking's carry-over

    # A second conversion is 409 (into a new opportunity or an existing one alike).
    assert c("POST", f"/v1/leads/{lead.id}/convert", json={}).status_code == 409
    other = c.post("/v1/opportunities", {"title": f"Other {tag()}"})
    assert c("POST", f"/v1/leads/{lead.id}/convert", json={"opportunity_id": other["id"]}).status_code == 409
    # A converted lead stays in end stages: a user's move, a bulk move; another end stage is fine.
    new = stage(c, "lead", "NEW")
    r = c("PATCH", f"/v1/leads/{lead.id}", json={"stage_id": new["id"]})
    assert r.status_code == 409 and r.headers["Content-Type"].startswith(PROBLEM), r.text
    r = c("POST", "/v1/leads/bulk", expect=200, json={"ids": [lead.id], "action": "set_stage", "stage_id": new["id"]})
    assert r.json()["results"][0]["status"] == "error" and "end stages" in r.json()["results"][0]["error"]
    ends = [s for s in c.items("/v1/lead-stages?page_size=200") if s["is_end"] and s["active"]
            and s["id"] != body["lead"]["stage"]["id"]]
    if ends:
        moved = c("PATCH", f"/v1/leads/{lead.id}", 200, json={"stage_id": ends[0]["id"]}).json()
        assert moved["stage"]["id"] == ends[0]["id"]
    assert c.get(f"/v1/opportunities?lead_id={lead.id}")["items"][0]["id"] == opportunity["id"]


def test_converting_into_an_existing_opportunity(platform, roles):
    c = Caller(platform)
    lead = Lead(c, roles["lead_shared"]["id"], roles["lead_dropped"]["id"])
    existing = c.post("/v1/opportunities", {"title": f"Existing {tag()}", "amount": "10.00", "currency": "EUR"})
    url = f"/v1/leads/{lead.id}/convert"
    marketer = Caller(platform, roles=("marketing",), user="conv-marketer")  # opportunities:view only
    assert marketer("POST", url, json={"opportunity_id": existing["id"]}).status_code == 403
    elsewhere = Caller(platform, roles=("marketing", "account_manager"), user="conv-other", office="office-9")
    assert elsewhere("POST", url, json={"opportunity_id": existing["id"]}).status_code == 404  # lead not visible
    assert c("POST", url, json={"opportunity_id": str(uuid.uuid4())}).status_code == 404
    assert c("POST", url, json={"opportunity_id": existing["id"], "title": "x"}).status_code == 422
    assert c.get(f"/v1/leads/{lead.id}")["converted_opportunity_id"] is None

    r = c("POST", url, json={"opportunity_id": existing["id"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["lead"]["converted_opportunity_id"] == existing["id"]
    opportunity = body["opportunity"]
    assert (opportunity["id"], opportunity["lead_id"], opportunity["company_id"], opportunity["contact_id"]) \
        == (existing["id"], lead.id, lead.company["id"], lead.main["id"])  # empty ones filled from the lead
    assert (opportunity["title"], opportunity["amount"]) == (existing["title"], "10.00")  # the rest is its own
    assert [w["contact_id"] for w in body["warnings"]] == [lead.cfo]
    _carried(c, lead, existing["id"], roles)
    assert [o["id"] for o in c.items(f"/v1/opportunities?lead_id={lead.id}")] == [existing["id"]]
    # An opportunity has one lead: converting another lead into it is 409.
    second = c.post("/v1/leads", {"title": f"Second {tag()}"})
    r = c("POST", f"/v1/leads/{second['id']}/convert", json={"opportunity_id": existing["id"]})
    assert r.status_code == 409 and r.json()["lead_id"] == lead.id, r.text
    assert c.get(f"/v1/leads/{second['id']}")["converted_opportunity_id"] is None


@pytest.mark.parametrize("keep_token", [True, False], ids=["token", "no-token"])
def test_company_and_contact_references_are_checked(platform, keep_token):
    c = Caller(platform, user=f"conv-refs-{keep_token}", token=keep_token)
    for field in ("company_id", "contact_id"):
        r = c("POST", "/v1/leads", json={"title": "dangling", field: str(uuid.uuid4())})
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == [field], r.text
    # Created a moment ago: counts at once (with the token, or after the gateway waited for the latest writes).
    for n in range(5):
        company = c.post("/v1/companies", {"name": f"Fresh {n} {tag()}"})
        contact = c.post("/v1/contacts", {"first_name": "Fay", "last_name": f"Fresh {n}"})
        record = c.post("/v1/opportunities", {"title": f"refs {n}", "company_id": company["id"],
                                              "contact_id": contact["id"]})
        assert (record["company_id"], record["contact_id"]) == (company["id"], contact["id"])
        other = c.post("/v1/companies", {"name": f"Other {n} {tag()}"})
        moved = c("PATCH", f"/v1/opportunities/{record['id']}", 200, json={"company_id": other["id"]}).json()
        assert moved["company_id"] == other["id"]
    r = c("PATCH", f"/v1/opportunities/{record['id']}", json={"contact_id": str(uuid.uuid4())})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "contact_id", r.text
    r = c("POST", "/v1/opportunities", json={"title": "x", "lead_id": str(uuid.uuid4())})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lead_id", r.text


def test_a_copy_into_another_office_needs_the_admin_role(platform):
    marketer = Caller(platform, roles=("marketing",), user="conv-copier")
    lead = marketer.post("/v1/leads", {"title": f"Mine {tag()}"})
    url = f"/v1/leads/{lead['id']}/copy"
    r = marketer("POST", url, json={"office_id": "office-2"})
    assert r.status_code == 403, r.text
    assert marketer.post(url, {"title": "Same office"})["office_id"] == "office-1"
    copied = Caller(platform).post(url, {"office_id": "office-2"})
    assert copied["office_id"] == "office-2"
    # Bulk never moves a record to another office, and the other office's records are "not found" items.
    r = marketer("POST", "/v1/leads/bulk", 200, json={"ids": [lead["id"], copied["id"]], "action": "assign_owner",
                                                      "owner_id": "conv-someone"})
    assert [(x["status"], x["error"]) for x in r.json()["results"]] == [("ok", None), ("error", "not found")]
    assert marketer.get(f"/v1/leads/{lead['id']}")["office_id"] == "office-1"


# -- a killed worker ---------------------------------------------------------------------------------

def _retry_503(fn: Callable[[], requests.Response], timeout: float = 90) -> requests.Response:
    """``fn()`` again while it answers 503 (as Retry-After says): the contract's "not yet" for a
    service whose worker is catching up."""
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(float(r.headers.get("Retry-After", "1")))


def _converted_event(platform: Any, lead_id: str) -> Envelope:
    db = Database(platform.db_urls["leads"])
    try:
        with db.transaction() as s:
            rows = s.execute(select(OUTBOX.c.payload).where(OUTBOX.c.key == lead_id)
                             .order_by(OUTBOX.c.id)).scalars().all()
    finally:
        db.dispose()
    found = [e for e in map(decode, rows) if e.event_type == "lead.converted"]
    assert len(found) == 1
    return found[0]


def _deliver_again(platform: Any, envelope: Envelope) -> tuple[int, int]:
    """Put ``envelope`` on crm.leads.v1 again; its (partition, offset)."""
    where: list[tuple[int, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        where.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": platform.config.kafka_bootstrap})
    producer.produce("crm.leads.v1", key=envelope.aggregate_id.encode(), value=encode(envelope), on_delivery=delivered)
    producer.flush(30)
    assert len(where) == 1
    return where[0]


def _consumed(platform: Any, service: str, consumer: str, partition: int, offset: int, timeout: float = 60) -> None:
    """Wait until ``consumer`` of ``service`` has applied (or skipped) crm.leads.v1's message at
    ``offset``: consumers keep their offsets in their database with their effects."""
    db = Database(platform.db_urls[service])
    deadline = time.monotonic() + timeout
    try:
        while True:
            with db.transaction() as s:
                reached = s.execute(select(OFFSETS.c.next_offset).where(
                    OFFSETS.c.consumer == consumer, OFFSETS.c.topic == "crm.leads.v1",
                    OFFSETS.c.partition == partition)).scalar()
            if reached is not None and reached > offset:
                return
            assert time.monotonic() < deadline, f"{consumer} did not reach offset {offset} (at {reached})"
            time.sleep(0.1)
    finally:
        db.dispose()


def test_a_killed_opportunities_worker_leaves_nothing_half_done(platform, roles):
    c = Caller(platform)
    lead = Lead(c, roles["lead_shared"]["id"], roles["lead_dropped"]["id"])
    c.get("/v1/opportunities?page_size=1")  # the opportunities worker has everything before the kill
    platform.processes.kill("opportunities-worker")
    try:
        r = c("POST", f"/v1/leads/{lead.id}/convert", json={})
        # The lead's side is committed; the opportunity is on its way (the gateway's wait ran out).
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        assert r.json()["lead"]["converted_opportunity_id"] == location.rsplit("/", 1)[1]
        pending = c("GET", location)
        assert pending.status_code == 503 and pending.headers["Retry-After"], pending.text
    finally:
        platform.processes.restart("opportunities-worker")
    opportunity = _retry_503(lambda: c("GET", location))
    assert opportunity.status_code == 200, opportunity.text
    opportunity_id = opportunity.json()["id"]
    assert opportunity.json()["lead_id"] == lead.id

    # The same conversion again: a redelivery (same event id), and a copy under a new event id.
    event = _converted_event(platform, lead.id)
    again = Envelope()
    again.CopyFrom(event)
    again.event_id = str(uuid.uuid4())
    for envelope in (event, again):
        partition, offset = _deliver_again(platform, envelope)
        _consumed(platform, "opportunities", "opportunities.conversions", partition, offset)
        _consumed(platform, "linking", "linking.records", partition, offset)
    # Exactly once: the opportunity, its version, every carried link.
    assert [o["id"] for o in c.items(f"/v1/opportunities?lead_id={lead.id}")] == [opportunity_id]
    assert c.get(location)["version"] == opportunity.json()["version"]
    _carried(c, lead, opportunity_id, roles)
    timeline = c.items(f"/v1/opportunities/{opportunity_id}/timeline?page_size=200")
    assert [x["type"] for x in timeline].count("converted_from_lead") == 1

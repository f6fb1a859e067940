"""Read-your-writes through the gateway (API.md, "Consistency"), on the real platform.

Every create -> use pair of the API, back to back with no sleep and no retry, ROUNDS times
each: once carrying the consistency token (the ``crm_ct`` cookie a session keeps, or the
``Consistency-Token`` header), once with no token at all. Any 404/409/422 (or a wrong list)
for what the client has just written fails the test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e

ROUNDS = 50
# The cookie a session keeps, and no token at all; the header (which wins over the cookie) is
# exercised by the linking pairs and the token tests, to keep the suite's time in bounds.
MODES = ("cookie", "none")
TOKEN = "Consistency-Token"


class Caller:
    """A client of the gateway: ``cookie`` keeps the crm_ct cookie like a browser, ``header`` sends
    back the last Consistency-Token it got, ``none`` sends neither (a script without state)."""

    def __init__(self, platform: Any, mode: str, roles: tuple[str, ...] = ("admin",), office: str = "office-1") -> None:
        self.base = platform.gateway_url
        self.mode = mode
        self.session = requests.Session() if mode == "cookie" else None
        self.headers = platform.auth(roles, user=f"ryw-{mode}", office=office)
        self.token: str | None = None

    def __call__(self, method: str, path: str, expect: int | None = None, **kw: Any) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        if self.mode == "header" and self.token:
            headers.setdefault(TOKEN, self.token)
        send = self.session.request if self.session is not None else requests.request
        r = send(method, self.base + path, headers=headers, timeout=30, **kw)
        if self.mode == "header" and TOKEN in r.headers:
            self.token = r.headers[TOKEN]
        if expect is not None:
            assert r.status_code == expect, f"{method} {path} ({self.mode}): {r.status_code} {r.text}"
        return r

    def post(self, path: str, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        return dict(self(path=path, method="POST", expect=expect, json=body).json())

    def ids(self, path: str) -> list[str]:
        return [item.get("id") or item.get("contact_id") or item.get("job_order_id")
                for item in self("GET", path, expect=200).json()["items"]]


def tag() -> str:
    return uuid.uuid4().hex[:10].upper()


def rounds(fn: Callable[[int], None]) -> None:
    for n in range(ROUNDS):
        fn(n)


def entry(c: Caller, kind: str, table: str, code: str | None = None) -> dict[str, Any]:
    t = tag()
    return c.post(f"/v1/{kind}-tables/{table}", {"names": {"en": f"RYW {t}"}, "code": code or f"R{t}"})


# -- catalogue -> records and triggers ----------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_new_catalogue_entry_is_usable_at_once(platform, mode):
    c = Caller(platform, mode)

    def one(_: int) -> None:
        source = entry(c, "lead", "sources")
        lead = c.post("/v1/leads", {"title": "uses a new source", "source_id": source["id"]})
        assert lead["source_id"] == source["id"]
        group = entry(c, "opportunity", "groups")
        opportunity = c.post("/v1/opportunities", {"title": "in a new group", "group_ids": [group["id"]]})
        assert opportunity["group_ids"] == [group["id"]]
        trigger = c.post("/v1/triggers", {
            "name": f"RYW {tag()}", "kind": "lead", "active": False, "event": {"type": "created"},
            "conditions": {"source_id": source["id"]},
            "actions": [{"type": "add_to_group", "group_id": entry(c, "lead", "groups")["id"]}]})
        c("DELETE", f"/v1/triggers/{trigger['id']}", expect=204)

    rounds(one)


# -- records -> linking, triggers ---------------------------------------------------------------

@pytest.mark.parametrize("mode", (*MODES, "header"))
def test_a_new_record_can_be_linked_and_tried_at_once(platform, mode):
    c = Caller(platform, mode)
    probe = c.post("/v1/triggers", {
        "name": f"RYW probe {tag()}", "kind": "lead", "active": False, "event": {"type": "created"},
        "actions": [{"type": "add_to_group", "group_id": entry(c, "lead", "groups")["id"]}]})

    role = entry(c, "lead", "roles")

    def one(n: int) -> None:
        lead = c.post("/v1/leads", {"title": f"fresh lead {n}"})
        base = f"/v1/leads/{lead['id']}"
        link = c.post(f"{base}/contacts", {"contact": {"first_name": "Ria", "last_name": f"Fresh {n}"},
                                           "role_id": role["id"]})
        assert link["contact_id"] in c.ids(f"{base}/contacts")
        job = c.post(f"{base}/job-orders", {"job_order": {"title": f"Welder {n}"}})
        assert job["job_order_id"] in c.ids(f"{base}/job-orders")
        activity = c.post("/v1/activities", {"type": "note", "subject": f"Call {n}", "lead_id": lead["id"]})
        assert c("GET", f"/v1/activities/{activity['id']}", expect=200).json()["lead"]["id"] == lead["id"]
        assert activity["id"] in c.ids(f"{base}/activities")
        dry = c("POST", f"/v1/triggers/{probe['id']}/dry-run", expect=200, json={"record_id": lead["id"]}).json()
        assert dry["record_id"] == lead["id"]
        opportunity = c.post("/v1/opportunities", {"title": f"fresh opportunity {n}"})
        c.post(f"/v1/opportunities/{opportunity['id']}/job-orders", {"job_order": {"title": f"Driver {n}"}})

    rounds(one)
    c("DELETE", f"/v1/triggers/{probe['id']}", expect=204)


@pytest.mark.parametrize("mode", MODES)
def test_a_new_file_can_be_referenced_and_its_tabs_list_the_record_at_once(platform, mode):
    c = Caller(platform, mode)

    def one(n: int) -> None:
        company = c.post("/v1/companies", {"name": f"Fresh company {n} {tag()}"})
        contact = c.post("/v1/contacts", {"first_name": "Kim", "last_name": f"Fresh {n}", "company_id": company["id"]})
        lead = c.post("/v1/leads", {"title": f"references new files {n}", "company_id": company["id"],
                                    "contact_id": contact["id"]})
        assert lead["id"] in c.ids(f"/v1/contacts/{contact['id']}/leads")
        assert lead["id"] in c.ids(f"/v1/companies/{company['id']}/leads")
        opportunity = c.post("/v1/opportunities", {"title": f"references new files {n}", "contact_id": contact["id"]})
        assert opportunity["id"] in c.ids(f"/v1/contacts/{contact['id']}/opportunities")

    rounds(one)


# -- catalogue relations and rules as records see them ------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_template_linked_to_a_stage_is_offered_at_once(platform, mode):
    c = Caller(platform, mode)
    lead = c.post("/v1/leads", {"title": "offered templates"})
    stage_id = lead["stage"]["id"]

    def one(n: int) -> None:
        template = c.post("/v1/templates", {"kind": "email", "name": f"RYW mail {n} {tag()}", "subject": "Hi",
                                            "body": "{{ lead.title }}", "visible_at": "lead_stage",
                                            "stage_ids": [stage_id]})
        assert template["id"] in c.ids(f"/v1/leads/{lead['id']}/templates?kind=email")
        c("PATCH", f"/v1/templates/{template['id']}", expect=200, json={"stage_ids": []})
        assert template["id"] not in c.ids(f"/v1/leads/{lead['id']}/templates?kind=email")
        c("DELETE", f"/v1/templates/{template['id']}", expect=204)

    rounds(one)


@pytest.mark.parametrize("mode", MODES)
def test_a_deactivated_stage_is_refused_at_once(platform, mode):
    c = Caller(platform, mode)
    lead = c.post("/v1/leads", {"title": "moves between stages"})

    def one(n: int) -> None:
        t = tag()
        stage = c.post("/v1/lead-stages", {"names": {"en": f"RYW {t}"}, "code": f"RYW{t}"})
        moved = c("PATCH", f"/v1/leads/{lead['id']}", expect=200, json={"stage_id": stage["id"]}).json()
        assert moved["stage"]["id"] == stage["id"]
        back = c("PATCH", f"/v1/leads/{lead['id']}", expect=200, json={"stage_id": lead["stage"]["id"]}).json()
        assert back["stage"]["id"] == lead["stage"]["id"]
        c("PATCH", f"/v1/lead-stages/{stage['id']}", expect=200, json={"active": False})
        c("PATCH", f"/v1/leads/{lead['id']}", expect=422, json={"stage_id": stage["id"]})

    rounds(one)


# -- composed operations ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_after_a_conversion_the_opportunity_tabs_show_what_was_carried_over(platform, mode):
    c = Caller(platform, mode)
    code = f"R{tag()}"  # the contact's role comes over as the opportunity role with the same code
    role = entry(c, "lead", "roles", code)
    entry(c, "opportunity", "roles", code)

    def one(n: int) -> None:
        lead = c.post("/v1/leads", {"title": f"converts {n}"})
        base = f"/v1/leads/{lead['id']}"
        contact = c.post(f"{base}/contacts", {"contact": {"first_name": "Cas", "last_name": f"Carried {n}"},
                                              "role_id": role["id"]})
        job = c.post(f"{base}/job-orders", {"job_order": {"title": f"Carried job {n}"}})
        converted = c.post(f"{base}/convert", {})
        opportunity = f"/v1/opportunities/{converted['opportunity']['id']}"
        assert c("GET", opportunity, expect=200).json()["lead_id"] == lead["id"]
        assert contact["contact_id"] in c.ids(f"{opportunity}/contacts")
        assert job["job_order_id"] in c.ids(f"{opportunity}/job-orders")
        assert converted["opportunity"]["id"] in c.ids(f"/v1/opportunities?lead_id={lead['id']}")

    rounds(one)


@pytest.mark.parametrize("mode", MODES)
def test_the_wizard_and_bulk_answer_with_a_token_covering_their_effects(platform, mode):
    c = Caller(platform, mode)

    def one(n: int) -> None:
        made = c.post("/v1/leads/wizard", {"company": {"mode": "new", "data": {"name": f"Wizard co {n} {tag()}"}},
                                           "contact": {"mode": "new", "data": {"first_name": "Wil",
                                                                               "last_name": f"Zard {n}"}},
                                           "record": {"mode": "empty", "data": {"title": f"wizard {n}"}}})
        lead_id = made["lead"]["id"]
        assert made["contact"]["id"] in c.ids(f"/v1/leads/{lead_id}/contacts")
        assert lead_id in c.ids(f"/v1/companies/{made['company']['id']}/leads")
        group = entry(c, "lead", "groups")
        bulk = c("POST", "/v1/leads/bulk", expect=200,
                 json={"ids": [lead_id], "action": "add_to_group", "group_id": group["id"]}).json()
        assert bulk["results"][0]["status"] == "ok", bulk
        assert lead_id in c.ids(f"/v1/leads?group_id={group['id']}")

    rounds(one)


# -- the token itself ---------------------------------------------------------------------------

def test_every_write_answers_with_a_small_token_that_grows_with_no_write(platform):
    c = Caller(platform, "header")
    sizes = []
    for n in range(30):
        r = c("POST", "/v1/leads", expect=201, json={"title": f"token size {n}"})
        assert r.headers[TOKEN] and "crm_ct=" in r.headers.get("Set-Cookie", "")
        assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
        sizes.append(len(r.headers[TOKEN]))
        c("POST", "/v1/companies", expect=201, json={"name": f"token size {n}"})
    assert max(sizes) < 200
    # Reads carry no new token; a forged or garbled one is refused, not ignored.
    assert TOKEN not in c("GET", "/v1/leads?page_size=1", expect=200).headers
    bad = c("GET", "/v1/leads", headers={TOKEN: c.token[:-3] + "AAA"})
    assert bad.status_code == 400 and bad.headers["Content-Type"].startswith("application/problem+json")


def test_a_service_that_is_behind_answers_503_within_the_bound_and_writes_nothing(platform):
    c = Caller(platform, "header")
    platform.processes.stop("linking-worker")
    try:
        lead = c.post("/v1/leads", {"title": "linking is away"})
        title = f"Never written {tag()}"
        started = time.monotonic()
        r = c("POST", f"/v1/leads/{lead['id']}/job-orders", json={"job_order": {"title": title}})
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert int(r.headers["Retry-After"]) >= 1
        assert elapsed < 5.0 + 3.0  # CRM_CONSISTENCY_WAIT, plus a loaded machine's slack
        tab = c("GET", f"/v1/leads/{lead['id']}/job-orders")
        assert tab.status_code == 503
    finally:
        platform.add_process("linking", "worker")
    # Back: the same request succeeds, and the refused one had written nothing.
    c("POST", f"/v1/leads/{lead['id']}/job-orders", expect=201, json={"job_order": {"title": title}})
    found = c("GET", f"/v1/job-orders?q={title}", expect=200).json()["items"]
    assert [j["title"] for j in found] == [title]

"""The 3-step wizard (``POST /v1/leads/wizard``, ``/v1/opportunities/wizard``) through the
gateway, on the real platform (PostgreSQL, Kafka): the gateway orchestrates linking and the
record services, undoes what it created when a step fails, and is safe to retry with the
same ``Idempotency-Key``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from test_records_gateway import Client, stage

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
NOTHING = {"/v1/companies": [], "/v1/contacts": [], "/v1/leads": [], "/v1/opportunities": []}


@pytest.fixture
def admin(platform) -> Client:
    return Client(platform)


def ids(client: Client, path: str, q: str | None = None) -> list[str]:
    r = client("GET", path, params={"q": q} if q else {})
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["items"]]


def leftovers(client: Client, tag: str) -> dict[str, list[str]]:
    """Everything named with ``tag`` that exists: none after a failed wizard."""
    return {path: ids(client, path, tag) for path in NOTHING}


def new_body(tag: str, **record_data: Any) -> dict[str, Any]:
    return {"company": {"mode": "new", "data": {"name": f"Wizard Co {tag}", "city": "Utrecht"}},
            "contact": {"mode": "new", "data": {"first_name": "Wim", "last_name": f"Wizard {tag}"}},
            "record": {"mode": "empty", "data": {"title": f"Wizard lead {tag}", **record_data}}}


def contacts_tab(client: Client, plural: str, record_id: str) -> list[tuple[str, str]]:
    r = client("GET", f"/v1/{plural}/{record_id}/contacts")
    assert r.status_code == 200, r.text
    return [(x["contact_id"], x["role"]["code"]) for x in r.json()["items"]]


def wizard(client: Client, plural: str, body: dict[str, Any], key: str | None = None) -> Any:
    return client("POST", f"/v1/{plural}/wizard", json=body, headers={"Idempotency-Key": key} if key else {})


def test_lead_wizard_creates_company_contact_and_lead(admin):
    tag = uuid.uuid4().hex[:10]
    r = wizard(admin, "leads", new_body(tag))
    assert r.status_code == 201, r.text
    body = r.json()
    lead, company, contact = body["lead"], body["company"], body["contact"]
    assert set(body) == {"lead", "company", "contact"}
    assert company["name"] == f"Wizard Co {tag}" and contact["last_name"] == f"Wizard {tag}"
    assert contact["company_id"] == company["id"]
    assert (lead["title"], lead["company_id"], lead["contact_id"]) == (f"Wizard lead {tag}", company["id"],
                                                                        contact["id"])
    assert r.headers["Location"] == f"/v1/leads/{lead['id']}" and "Idempotent-Replayed" not in r.headers
    assert admin("GET", f"/v1/leads/{lead['id']}").json()["contact_id"] == contact["id"]
    # The detail tabs, at once: the contact is the lead's main contact; the company lists the lead.
    assert contacts_tab(admin, "leads", lead["id"]) == [(contact["id"], "MAIN")]
    assert ids(admin, f"/v1/companies/{company['id']}/leads") == [lead["id"]]


def test_lead_wizard_without_contact_or_company(admin):
    tag = uuid.uuid4().hex[:10]
    company = admin("POST", "/v1/companies", json={"name": f"Known Co {tag}"}).json()
    r = wizard(admin, "leads", {"company": {"mode": "existing", "id": company["id"]}, "contact": {"mode": "none"},
                                "record": {"mode": "empty", "data": {"title": f"Company only {tag}"}}})
    assert r.status_code == 201, r.text
    assert r.json()["company"]["id"] == company["id"] and r.json()["contact"] is None
    assert (r.json()["lead"]["company_id"], r.json()["lead"]["contact_id"]) == (company["id"], None)
    r = wizard(admin, "leads", {"company": {"mode": "none"},
                                "record": {"mode": "empty", "data": {"title": f"Bare {tag}"}}})
    assert r.status_code == 201, r.text
    assert (r.json()["company"], r.json()["contact"], r.json()["lead"]["company_id"]) == (None, None, None)
    assert ids(admin, "/v1/companies", tag) == [company["id"]] and ids(admin, "/v1/contacts", tag) == []


@pytest.mark.parametrize("broken", ["other_kind_stage", "unknown_field"])
def test_a_failing_last_step_leaves_nothing_behind(admin, broken):
    tag = uuid.uuid4().hex[:10]
    bad = {"stage_id": stage(admin, "opportunity", "PROSPECTING")["id"]} if broken == "other_kind_stage" \
        else {"colour": "red"}
    r = wizard(admin, "leads", new_body(tag, **bad))
    assert r.status_code == 422, r.text
    assert r.headers["Content-Type"].startswith(PROBLEM)
    problem = r.json()
    assert problem["step"] == "record" and problem["status"] == 422
    assert [e["field"] for e in problem["errors"]] == [next(iter(bad))]
    assert "not_undone" not in problem and "Undoing" not in problem["detail"]
    assert leftovers(admin, tag) == NOTHING


def test_same_key_replays_and_another_body_is_refused(admin):
    tag, key = uuid.uuid4().hex[:10], uuid.uuid4().hex
    first = wizard(admin, "leads", new_body(tag), key)
    assert first.status_code == 201, first.text
    again = wizard(admin, "leads", new_body(tag), key)
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Location"] == first.headers["Location"]
    body = first.json()
    expected = {"/v1/companies": [body["company"]["id"]], "/v1/contacts": [body["contact"]["id"]],
                "/v1/leads": [body["lead"]["id"]], "/v1/opportunities": []}
    assert leftovers(admin, tag) == expected
    other = wizard(admin, "leads", new_body(tag, description="another body"), key)
    assert other.status_code == 422, other.text
    assert other.json()["step"] == "record" and other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert leftovers(admin, tag) == expected  # the replayed company and contact were not undone
    assert contacts_tab(admin, "leads", body["lead"]["id"]) == [(body["contact"]["id"], "MAIN")]


def test_retrying_a_failed_wizard(admin):
    tag, key = uuid.uuid4().hex[:10], uuid.uuid4().hex
    group = admin("POST", "/v1/lead-tables/groups", json={"names": {"en": f"Later {tag}"}, "code": f"L{tag}",
                                                          "active": False}).json()
    failing = new_body(tag, group_ids=[group["id"]])  # an inactive group: the record step refuses it
    for _ in range(2):  # the same failing body with the same key fails the same way, and leaves nothing
        r = wizard(admin, "leads", failing, key)
        assert r.status_code == 422, r.text
        assert r.json()["step"] == "record" and r.json()["errors"][0]["field"] == "group_ids.0"
        assert leftovers(admin, tag) == NOTHING
    # A new key with a fixed body succeeds.
    fixed_tag = uuid.uuid4().hex[:10]
    r = wizard(admin, "leads", new_body(fixed_tag), uuid.uuid4().hex)
    assert r.status_code == 201, r.text
    # Once the cause is gone, the same key and body succeed: what earlier attempts created and
    # undid is not replayed, the wizard runs afresh.
    assert admin("PATCH", f"/v1/lead-tables/groups/{group['id']}", json={"active": True}).status_code == 200
    r = wizard(admin, "leads", failing, key)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["lead"]["group_ids"] == [group["id"]] and "Idempotent-Replayed" not in r.headers
    assert leftovers(admin, tag) == {"/v1/companies": [body["company"]["id"]], "/v1/contacts": [body["contact"]["id"]],
                                     "/v1/leads": [body["lead"]["id"]], "/v1/opportunities": []}
    again = wizard(admin, "leads", failing, key)
    assert again.status_code == 201 and again.json() == body and again.headers["Idempotent-Replayed"] == "true"


def test_opportunity_wizard(admin):
    tag = uuid.uuid4().hex[:10]
    # none is not allowed for an opportunity, for the company or the contact: 422, nothing created.
    for company, contact in (({"mode": "none"}, {"mode": "new", "data": {"first_name": "N", "last_name": tag}}),
                             ({"mode": "new", "data": {"name": f"Co {tag}"}}, {"mode": "none"})):
        r = wizard(admin, "opportunities", {"company": company, "contact": contact,
                                            "record": {"mode": "empty", "data": {"title": f"Opp {tag}"}}})
        assert r.status_code == 422, r.text
        assert r.headers["Content-Type"].startswith(PROBLEM) and r.json()["errors"]
        assert leftovers(admin, tag) == NOTHING
    # Existing company and contact.
    company = admin("POST", "/v1/companies", json={"name": f"Existing Co {tag}"}).json()
    contact = admin("POST", "/v1/contacts", json={"first_name": "Eva", "last_name": f"Existing {tag}"}).json()
    existing = {"company": {"mode": "existing", "id": company["id"]},
                "contact": {"mode": "existing", "id": contact["id"]}}
    r = wizard(admin, "opportunities", {**existing, "record": {"mode": "empty", "data": {
        "title": f"Opp {tag}", "amount": "1500.00", "currency": "EUR"}}})
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["company"]["id"], made["contact"]["id"]) == (company["id"], contact["id"])
    opportunity = made["opportunity"]
    assert (opportunity["company_id"], opportunity["contact_id"], opportunity["amount"]) == (
        company["id"], contact["id"], "1500.00")
    assert contacts_tab(admin, "opportunities", opportunity["id"]) == [(contact["id"], "MAIN")]
    # Copy: the new opportunity is a copy of the first, changed by data, with the wizard's company and contact.
    r = wizard(admin, "opportunities", {
        "company": {"mode": "new", "data": {"name": f"Copy Co {tag}"}},
        "contact": {"mode": "new", "data": {"first_name": "Cor", "last_name": f"Copy {tag}"}},
        "record": {"mode": "copy", "copy_from": opportunity["id"], "data": {"title": f"Copied {tag}"}}})
    assert r.status_code == 201, r.text
    copied = r.json()
    assert copied["opportunity"]["id"] != opportunity["id"]
    assert (copied["opportunity"]["title"], copied["opportunity"]["amount"], copied["opportunity"]["currency"]) == (
        f"Copied {tag}", "1500.00", "EUR")
    assert (copied["opportunity"]["company_id"], copied["opportunity"]["contact_id"]) == (
        copied["company"]["id"], copied["contact"]["id"])
    assert copied["contact"]["company_id"] == copied["company"]["id"]
    assert contacts_tab(admin, "opportunities", copied["opportunity"]["id"]) == [(copied["contact"]["id"], "MAIN")]
    # Copying a record that does not exist fails at the record step; the new company and contact are undone.
    r = wizard(admin, "opportunities", {
        "company": {"mode": "new", "data": {"name": f"Ghost Co {tag}"}},
        "contact": {"mode": "existing", "id": contact["id"]},
        "record": {"mode": "copy", "copy_from": str(uuid.uuid4()), "data": {}}})
    assert r.status_code == 404 and r.json()["step"] == "record", r.text
    assert ids(admin, "/v1/companies", f"Ghost Co {tag}") == []
    assert sorted(ids(admin, "/v1/contacts", tag)) == sorted([contact["id"], copied["contact"]["id"]])


def test_missing_permission_is_refused_before_anything_is_created(platform, admin):
    tag = uuid.uuid4().hex[:10]
    marketing = Client(platform, roles=("marketing",), user=f"m-{tag}", office="office-1")
    body = {"company": {"mode": "new", "data": {"name": f"Refused Co {tag}"}},
            "contact": {"mode": "new", "data": {"first_name": "R", "last_name": f"Refused {tag}"}},
            "record": {"mode": "empty", "data": {"title": f"Refused {tag}"}}}
    r = wizard(marketing, "opportunities", body)
    assert r.status_code == 403, r.text
    assert r.headers["Content-Type"].startswith(PROBLEM)
    viewer = Client(platform, roles=("viewer",), user=f"v-{tag}", office="office-1")
    assert wizard(viewer, "leads", body).status_code == 403
    assert leftovers(admin, tag) == NOTHING


def test_the_platform_document_describes_the_wizards(platform):
    doc = requests.get(f"{platform.gateway_url}/openapi.json", timeout=30).json()
    for records, kind in (("leads", "lead"), ("opportunities", "opportunity")):
        operation = doc["paths"][f"/v1/{records}/wizard"]["post"]
        content = operation["requestBody"]["content"]["application/json"]
        name = content["schema"]["$ref"].split("/")[-1]
        assert set(doc["components"]["schemas"][name]["properties"]) == {"company", "contact", "record"}
        assert content["examples"]
        created = operation["responses"]["201"]["content"]["application/json"]
        assert created["schema"]["$ref"].split("/")[-1] in doc["components"]["schemas"]
        assert set(created["examples"][kind]["value"]) == {kind, "company", "contact"}
        assert {"403", "422"} <= set(operation["responses"])
    assert not [op for op in doc.get("x-unrouted-operations", []) if "wizard" in op]

"""Contacts and job orders on leads and opportunities, the detail tabs, and the conversion
carrying links over, through the gateway on the real platform (PostgreSQL, Kafka).

Linking learns of a record from the records' events; the gateway's read-your-writes makes a
new lead linkable at once, and the tabs (the conversion's too) show the client's writes at
once, so nothing here is retried. The roles come from the catalogue's starter configuration
(MAIN and SIGN per kind): MAIN is the record's contact_id, SIGN is added from the tab.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from test_records_gateway import Client, create

pytestmark = pytest.mark.e2e


def role(client: Client, kind: str, code: str) -> dict[str, Any]:
    roles = client("GET", f"/v1/{kind}-tables/roles").json()["items"]
    return next(r for r in roles if r["code"] == code)


def post(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client("POST", path, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def items(client: Client, path: str) -> list[dict[str, Any]]:
    r = client("GET", path)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def timeline_types(client: Client, path: str) -> list[str]:
    r = client("GET", f"{path}/timeline")
    assert r.status_code == 200, r.text
    return [x["type"] for x in r.json()["items"]]


def test_links_tabs_and_conversion_through_the_gateway(platform):
    admin = Client(platform)
    tag = uuid.uuid4().hex[:8]
    lead = create(admin, "leads", {"title": f"Linked {tag}"})
    base = f"/v1/leads/{lead['id']}"
    main, sign = role(admin, "lead", "MAIN"), role(admin, "lead", "SIGN")

    # A new contact, created with its link (the signing authority); a new job order the same way.
    link = post(admin, f"{base}/contacts", {
        "contact": {"first_name": "Anna", "last_name": f"Smit {tag}", "email": f"anna.{tag}@example.com"},
        "role_id": sign["id"]})
    contact_id = link["contact_id"]
    assert link["role"]["code"] == "SIGN" and link["contact"]["last_name"] == f"Smit {tag}"
    r = admin("POST", f"{base}/job-orders", json={"job_order": {"title": f"Welder {tag}", "status": "open"}})
    assert r.status_code == 201, r.text
    job_order_id = r.json()["job_order_id"]
    # The main contact is the lead's contact_id: setting it puts that contact on the tab as MAIN.
    boss = post(admin, "/v1/contacts", {"first_name": "Bert", "last_name": f"Boss {tag}"})
    r = admin("PATCH", base, json={"contact_id": boss["id"]})
    assert r.status_code == 200, r.text

    # The rules.
    again = admin("POST", f"{base}/contacts", json={"contact_id": contact_id, "role_id": sign["id"]})
    assert again.status_code == 409, again.text
    second_sign = admin("POST", f"{base}/contacts", json={"contact": {"first_name": "Sid", "last_name": tag},
                                                          "role_id": sign["id"]})
    assert second_sign.status_code == 409 and second_sign.json()["role_code"] == "SIGN", second_sign.text
    main_from_tab = admin("POST", f"{base}/contacts", json={"contact_id": contact_id, "role_id": main["id"]})
    assert main_from_tab.status_code == 409 and "contact_id" in main_from_tab.json()["detail"], main_from_tab.text
    unlink_main = admin("DELETE", f"{base}/contacts/{boss['id']}")
    assert unlink_main.status_code == 409, unlink_main.text
    protected = admin("PATCH", f"{base}/contacts/{contact_id}", json={"role_id": main["id"]})
    assert protected.status_code == 409 and protected.headers["Content-Type"].startswith("application/problem+json")
    other_kind = admin("PATCH", f"{base}/contacts/{contact_id}",
                       json={"role_id": role(admin, "opportunity", "SIGN")["id"]})
    assert other_kind.status_code == 422, other_kind.text
    other_lead = create(admin, "leads", {"title": f"Other {tag}"})
    taken = admin("POST", f"/v1/leads/{other_lead['id']}/job-orders", json={"job_order_id": job_order_id})
    assert taken.status_code == 409 and lead["id"] in taken.json()["detail"], taken.text
    viewer = Client(platform, roles=("viewer",), user="v1", office="office-1")
    assert viewer("POST", f"{base}/job-orders", json={"job_order": {"title": "No"}}).status_code == 403
    assert [x["contact_id"] for x in items(viewer, f"{base}/contacts")] == [contact_id, boss["id"]]
    stranger = Client(platform, roles=("viewer",), user="v2", office="elsewhere")
    assert stranger("GET", f"{base}/contacts").status_code == 404

    # The tabs.
    assert [(x["contact_id"], x["role"]["code"]) for x in items(admin, f"{base}/contacts")] == [
        (contact_id, "SIGN"), (boss["id"], "MAIN")]
    assert [x["job_order"]["title"] for x in items(admin, f"{base}/job-orders")] == [f"Welder {tag}"]
    assert items(admin, f"{base}/activities") == [] and items(admin, f"{base}/placements") == []
    timeline = timeline_types(admin, base)
    assert timeline[:3] == ["contact_linked", "job_order_linked", "contact_linked"] and "created" in timeline, timeline
    listed = items(admin, f"/v1/contacts/{contact_id}/leads")
    assert [(x["id"], x["role_id"]) for x in listed] == [(lead["id"], sign["id"])]

    # Conversion: the opportunity gets the contacts (MAIN and SIGN -> the opportunity's) and the job order.
    r = admin("POST", f"{base}/convert", json={})
    assert r.status_code == 201, r.text
    opportunity_id = r.json()["opportunity"]["id"]
    opportunity = f"/v1/opportunities/{opportunity_id}"
    carried = sorted((x["contact_id"], x["role"]["code"]) for x in items(admin, f"{opportunity}/contacts"))
    assert carried == sorted([(contact_id, "SIGN"), (boss["id"], "MAIN")])
    assert [x["job_order_id"] for x in items(admin, f"{opportunity}/job-orders")] == [job_order_id]
    assert "converted" in timeline_types(admin, base)
    assert "converted_from_lead" in timeline_types(admin, opportunity)
    # The lead keeps its own links; the contact is now on both.
    assert [x["job_order_id"] for x in items(admin, f"{base}/job-orders")] == [job_order_id]
    assert [x["id"] for x in items(admin, f"/v1/contacts/{contact_id}/opportunities")] == [opportunity_id]
    # A company or contact a record uses cannot be deleted.
    assert admin("DELETE", f"/v1/contacts/{boss['id']}").status_code == 409


def test_a_deleted_lead_frees_its_job_order(platform):
    admin = Client(platform)
    tag = uuid.uuid4().hex[:8]
    first = create(admin, "leads", {"title": f"First {tag}"})
    second = create(admin, "leads", {"title": f"Second {tag}"})
    link = post(admin, f"/v1/leads/{first['id']}/job-orders", {"job_order": {"title": f"Painter {tag}"}})
    job_order_id = link["job_order_id"]
    assert admin("DELETE", f"/v1/leads/{first['id']}").status_code == 204
    moved = post(admin, f"/v1/leads/{second['id']}/job-orders", {"job_order_id": job_order_id})
    assert moved["job_order_id"] == job_order_id


def test_company_leads_through_the_gateway(platform):
    admin = Client(platform)
    tag = uuid.uuid4().hex[:8]
    r = admin("POST", "/v1/companies", json={"name": f"Acme {tag}"})
    assert r.status_code == 201, r.text
    company = r.json()
    own = create(admin, "leads", {"title": f"A own {tag}", "company_id": company["id"]})
    via_contact = create(admin, "leads", {"title": f"B via contact {tag}"})
    post(admin, f"/v1/leads/{via_contact['id']}/contacts", {
        "contact": {"first_name": "Ben", "last_name": f"Acme {tag}", "company_id": company["id"]},
        "role_id": role(admin, "lead", "SIGN")["id"]})
    assert [x["id"] for x in items(admin, f"/v1/companies/{company['id']}/leads")] == [own["id"], via_contact["id"]]

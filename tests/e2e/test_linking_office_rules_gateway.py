"""Linking's office rules and main/signing contacts through the gateway, on the real platform
(issue 15): what a user notices, read back as the owner.

- an activity follows its record's office, an unlinked one its creator's office (404 elsewhere);
- a shared file another office's record shows cannot be changed from here (409); a company or
  contact a record uses cannot be deleted by anyone (409);
- the record's contact_id is its MAIN contact on the contacts tab; one SIGN per record;
- a conversion carries every contact over, one without a matching role with no role (and the
  opportunity's timeline says which lead role was dropped).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from test_records_gateway import Client

pytestmark = pytest.mark.e2e


def ok(client: Client, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
    r = client(method, path, **kw)
    assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:500]}"
    return r.json() if r.content else None


def roles_by_code(client: Client, kind: str) -> dict[str, str]:
    listed = ok(client, "GET", f"/v1/{kind}-tables/roles", params={"page_size": 200})["items"]
    return {r["code"]: r["id"] for r in listed}


def tab(client: Client, path: str) -> list[tuple[str, str | None]]:
    return sorted((x["contact_id"], x["role"]["code"] if x["role"] else None)
                  for x in ok(client, "GET", path, params={"page_size": 200})["items"])


def test_office_rules_and_main_contacts_through_the_gateway(platform):
    tag = uuid.uuid4().hex[:8]
    admin = Client(platform, user=f"or-admin-{tag}", office=f"or-1-{tag}")
    owner = Client(platform, roles=("marketing", "account_manager"), user=f"or-owner-{tag}", office=f"or-1-{tag}")
    stranger = Client(platform, roles=("marketing", "account_manager"), user=f"or-stranger-{tag}",
                      office=f"or-2-{tag}")
    only_lead = ok(admin, "POST", "/v1/lead-tables/roles", 201,
                   json={"names": {"en": f"Lead only {tag}"}, "code": f"LO{tag}".upper()})
    lead_roles = roles_by_code(admin, "lead")

    company = ok(owner, "POST", "/v1/companies", 201, json={"name": f"Acme {tag}"})
    boss = ok(owner, "POST", "/v1/contacts", 201, json={"first_name": "Bert", "last_name": f"Boss {tag}",
                                                        "company_id": company["id"]})
    lead = ok(owner, "POST", "/v1/leads", 201, json={"title": f"Secret {tag}", "company_id": company["id"],
                                                     "contact_id": boss["id"]})
    base = f"/v1/leads/{lead['id']}"
    # The lead's contact_id is its MAIN contact; one SIGN; a contact with a lead-only role.
    assert tab(owner, f"{base}/contacts") == [(boss["id"], "MAIN")]
    signer = ok(owner, "POST", f"{base}/contacts", 201, json={
        "contact": {"first_name": "Sig", "last_name": f"Ner {tag}"}, "role_id": lead_roles["SIGN"]})["contact_id"]
    r = owner("POST", f"{base}/contacts", json={"contact": {"first_name": "Two", "last_name": tag},
                                               "role_id": lead_roles["SIGN"]})
    assert r.status_code == 409 and r.json()["role_code"] == "SIGN", r.text
    odd = ok(owner, "POST", f"{base}/contacts", 201, json={
        "contact": {"first_name": "Odd", "last_name": f"Role {tag}"}, "role_id": only_lead["id"]})["contact_id"]
    activity = ok(owner, "POST", "/v1/activities", 201, json={"type": "note", "subject": f"Secret {tag}",
                                                             "lead_id": lead["id"]})
    unlinked = ok(owner, "POST", "/v1/activities", 201, json={"type": "task", "subject": f"Secret task {tag}"})

    # Another office: the activities are not found, the shared files it may not change.
    for a in (activity, unlinked):
        for method in ("GET", "PATCH", "DELETE"):
            r = stranger(method, f"/v1/activities/{a['id']}", **({"json": {"subject": "x"}} if method == "PATCH"
                                                                    else {}))
            assert r.status_code == 404 and "Secret" not in r.text, (method, r.text)
    assert stranger("GET", "/v1/activities", params={"lead_id": lead["id"]}).status_code == 404
    assert stranger("GET", f"/v1/companies/{company['id']}").status_code == 200  # shared: readable
    for method, path, body in (("PATCH", f"/v1/companies/{company['id']}", {"name": "Taken"}),
                               ("PATCH", f"/v1/contacts/{boss['id']}", {"last_name": "Taken"}),
                               ("PATCH", f"/v1/contacts/{signer}", {"last_name": "Taken"}),
                               ("DELETE", f"/v1/contacts/{odd}", None)):
        r = stranger(method, path, json=body)
        assert r.status_code == 409 and r.headers["Content-Type"].startswith("application/problem+json"), r.text
        assert lead["id"] not in r.text
    # Nobody deletes a company or contact the lead uses, its owner neither; nor the main contact from the tab.
    assert owner("DELETE", f"/v1/companies/{company['id']}").status_code == 409
    assert owner("DELETE", f"/v1/contacts/{boss['id']}").status_code == 409
    assert owner("DELETE", f"{base}/contacts/{boss['id']}").status_code == 409
    # Read back as the owner: nothing changed.
    assert ok(owner, "GET", f"/v1/companies/{company['id']}") == company
    assert ok(owner, "GET", f"/v1/contacts/{boss['id']}") == boss
    assert ok(owner, "GET", f"/v1/activities/{unlinked['id']}")["version"] == 1
    assert ok(owner, "GET", f"/v1/activities/{activity['id']}")["version"] == 1
    assert tab(owner, f"{base}/contacts") == sorted([(boss["id"], "MAIN"), (signer, "SIGN"), (odd, only_lead["code"])])

    # A new contact_id: the new one is MAIN, the old one stays without a role.
    deputy = ok(owner, "POST", "/v1/contacts", 201, json={"first_name": "Dee", "last_name": f"Puty {tag}"})
    ok(owner, "PATCH", base, json={"contact_id": deputy["id"]})
    assert tab(owner, f"{base}/contacts") == sorted([(boss["id"], None), (signer, "SIGN"), (odd, only_lead["code"]),
                                                     (deputy["id"], "MAIN")])

    # Conversion: every contact comes over; the lead-only role's contact without a role, said in the timeline.
    converted = ok(owner, "POST", f"{base}/convert", 201, json={})
    opportunity = f"/v1/opportunities/{converted['opportunity']['id']}"
    assert tab(owner, f"{opportunity}/contacts") == sorted([(boss["id"], None), (signer, "SIGN"), (odd, None),
                                                            (deputy["id"], "MAIN")])
    timeline = ok(owner, "GET", f"{opportunity}/timeline", params={"page_size": 200})["items"]
    dropped = [x["data"] for x in timeline if x["type"] == "contact_linked" and x["data"].get("role_dropped_from")]
    assert [(d["contact_id"], d["role_dropped_from"]) for d in dropped] == [(odd, only_lead["code"])]
    assert stranger("GET", f"{opportunity}/contacts").status_code == 404

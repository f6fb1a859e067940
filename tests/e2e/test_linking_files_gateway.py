"""Companies, contacts, job orders, placements and activities through the gateway (linking service).

The activity goes on a real lead, created through the gateway: linking learns of it from the
leads service's events, and the gateway's read-your-writes makes it usable at once (no retry).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from test_records_gateway import Client, create

pytestmark = pytest.mark.e2e


def made(client: Client, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = client("POST", path, json=body, **kw)
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(r.json()["id"]) and r.headers["ETag"] == '"1"'
    return r.json()


def item_ids(client: Client, path: str, **params: str) -> list[str]:
    r = client("GET", path, params=params)
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["items"]]


def test_files_through_the_gateway(platform):
    admin = Client(platform)
    tag = uuid.uuid4().hex[:8]

    # Company (retry-safe with an Idempotency-Key), contact and job order at it, a placement.
    key = {"Idempotency-Key": f"company-{tag}"}
    company = made(admin, "/v1/companies", {"name": f"Acme {tag}", "website": "https://acme.example"}, headers=key)
    again = admin("POST", "/v1/companies", json={"name": f"Acme {tag}", "website": "https://acme.example"},
                  headers=key)
    assert again.status_code == 201 and again.json()["id"] == company["id"]
    assert item_ids(admin, "/v1/companies", q=f"ACME {tag}") == [company["id"]]
    bad = admin("POST", "/v1/companies", json={"name": "x", "email": "not-an-email"})
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["email"]

    contact = made(admin, "/v1/contacts", {"first_name": "Ada", "last_name": f"Lovelace {tag}",
                                           "company_id": company["id"]})
    assert item_ids(admin, "/v1/contacts", company_id=company["id"]) == [contact["id"]]
    assert item_ids(admin, "/v1/contacts", q=f"ada lovelace {tag}") == [contact["id"]]
    job = made(admin, "/v1/job-orders", {"title": f"Welder {tag}", "company_id": company["id"], "status": "open"})
    assert job["related_to"] == {"lead_id": None, "opportunity_id": None}
    assert item_ids(admin, "/v1/job-orders", company_id=company["id"]) == [job["id"]]
    r = admin("POST", "/v1/placements", json={"job_order_id": job["id"], "candidate_name": "Carla",
                                              "start_date": "2026-03-01", "end_date": "2026-02-01"})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["end_date"]
    placement = made(admin, "/v1/placements", {"job_order_id": job["id"], "candidate_name": "Carla",
                                               "start_date": "2026-03-01", "end_date": "2026-06-30"})
    assert item_ids(admin, "/v1/placements", job_order_id=job["id"]) == [placement["id"]]

    # An activity on a real lead, just created: linking knows it at once.
    lead = create(admin, "leads", {"title": f"Lead {tag}"})
    activity = made(admin, "/v1/activities", {"type": "task", "subject": f"Call {tag}", "lead_id": lead["id"],
                                              "due_at": "2026-12-01T09:00:00Z"})
    url = f"/v1/activities/{activity['id']}"
    shown = admin("GET", url, headers={"Accept-Language": "nl"}).json()
    lead_nl = admin("GET", f"/v1/leads/{lead['id']}", headers={"Accept-Language": "nl"}).json()
    assert shown["lead"]["id"] == lead["id"] and shown["lead"]["title"] == f"Lead {tag}"
    assert shown["lead"]["stage"] == {k: lead_nl["stage"][k] for k in ("id", "name", "code", "color", "is_end")}

    # allowed_stages: the active lead stages but the current one.
    active = admin("GET", "/v1/lead-stages", params={"active": "true", "page_size": 200}).json()["items"]
    allowed = admin("GET", url).json()["lead"]["allowed_stages"]
    assert [s["id"] for s in allowed] == [s["id"] for s in active if s["id"] != lead["stage"]["id"]]
    assert item_ids(admin, "/v1/activities", lead_id=lead["id"]) == [activity["id"]]

    # Permissions: reads for viewers, writes need files:edit, linking to an opportunity opportunities:edit.
    viewer = Client(platform, roles=("viewer",), user="files-viewer")
    assert viewer("GET", url).status_code == 200
    assert viewer("POST", "/v1/companies", json={"name": "x"}).status_code == 403
    marketing = Client(platform, roles=("marketing",), user="files-marketing")
    r = marketing("POST", "/v1/activities", json={"type": "note", "subject": "x", "opportunity_id": str(uuid.uuid4())})
    assert r.status_code == 403

    # Concurrency and deletes: a company's contacts and job orders stay; a job order's placements go.
    r = admin("PATCH", url, json={"subject": "stale"}, headers={"If-Match": '"9"'})
    assert r.status_code == 412
    r = admin("PATCH", url, json={"subject": f"Called {tag}"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["ETag"] == '"2"'
    assert admin("DELETE", f"/v1/companies/{company['id']}", headers={"If-Match": '"1"'}).status_code == 204
    assert admin("GET", f"/v1/contacts/{contact['id']}").json()["company_id"] is None
    assert admin("GET", f"/v1/job-orders/{job['id']}").json()["company_id"] is None
    assert admin("DELETE", f"/v1/job-orders/{job['id']}").status_code == 204
    assert admin("GET", f"/v1/placements/{placement['id']}").status_code == 404
    assert admin("DELETE", url).status_code == 204
    assert admin("GET", url).status_code == 404

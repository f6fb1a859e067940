"""Attachments, templates/print and reports of records, through the gateway."""

from __future__ import annotations

import uuid

import pytest
from test_records_gateway import Client, create, stage

pytestmark = pytest.mark.e2e


def test_attachments_through_the_gateway(platform):
    admin = Client(platform)
    lead = create(admin, "leads", {"title": "With files"})
    base = f"/v1/leads/{lead['id']}/attachments"
    content = b"%PDF-1.4 pretend\n" + bytes(range(256)) * 100
    r = admin("POST", base, files={"file": ("offer.pdf", content, "application/pdf")}, data={"type": "offer"})
    assert r.status_code == 201, r.text
    attachment = r.json()
    assert attachment["size"] == len(content) and attachment["type"] == "offer"
    assert [a["id"] for a in admin("GET", base).json()["items"]] == [attachment["id"]]
    download = admin("GET", f"{base}/{attachment['id']}")
    assert download.status_code == 200 and download.content == content
    assert download.headers["Content-Type"] == "application/pdf"
    assert "attachment" in download.headers["Content-Disposition"]
    json_upload = admin("POST", base, json={"file": "x"})
    assert json_upload.status_code == 415
    assert admin("DELETE", f"{base}/{attachment['id']}").status_code == 204
    assert admin("GET", f"{base}/{attachment['id']}").status_code == 404


def test_print_and_reports_through_the_gateway(platform):
    admin = Client(platform)
    tag = uuid.uuid4().hex[:6]
    new = stage(admin, "lead", "NEW")
    template = admin("POST", "/v1/templates", json={
        "kind": "print", "name": f"Sheet {tag}", "body": "<h1>{{ lead.title }}</h1><p>{{ record.stage.name }}</p>",
        "visible_at": "lead_stage", "stage_ids": [new["id"]]}).json()
    lead = create(admin, "leads", {"title": f"<b>Printed {tag}</b>"})
    url = f"/v1/leads/{lead['id']}"
    templates = admin("GET", f"{url}/templates", params={"kind": "print"})
    assert templates.status_code == 200, templates.text
    assert template["id"] in [t["id"] for t in templates.json()["items"]]
    html = admin("POST", f"{url}/print", json={"template_id": template["id"]})
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    assert f"&lt;b&gt;Printed {tag}&lt;/b&gt;" in html.text
    pdf = admin("POST", f"{url}/print", json={"template_id": template["id"]}, headers={"Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    report = admin("GET", "/v1/leads/reports/stages").json()
    counts = {s["id"]: s["count"] for s in report["stages"]}
    assert counts[new["id"]] >= 1
    funnel = admin("GET", "/v1/leads/reports/funnel").json()
    assert funnel["created"] >= 1 and "by_source" in funnel and "by_owner" in funnel
    opportunities = admin("GET", "/v1/opportunities/reports/stages").json()
    assert "stages" in opportunities


def test_overview_board_totals_through_the_gateway(platform):
    """One call gives a stage group tab's columns: per stage the count, amount and weighted
    amount of what the caller may see (another office's opportunity counts only for an admin)."""
    admin = Client(platform)
    viewer = Client(platform, roles=("viewer",), user="e2e-board-viewer", office="office-1")
    tag = uuid.uuid4().hex[:6].upper()
    group = admin("POST", "/v1/opportunity-tables/stage-groups",
                  json={"names": {"en": f"Board {tag}"}, "code": f"B{tag}"}).json()
    first, second = (admin("POST", "/v1/opportunity-stages",
                           json={"names": {"en": f"{name} {tag}"}, "code": f"{name}{tag}", "index": index,
                                 "stage_group_id": group["id"]}).json() for name, index in (("ONE", 1), ("TWO", 2)))
    for amount, probability, office in (("100.00", 25, "office-1"), ("50.50", 100, "office-1"),
                                        ("7.00", 10, "office-2")):
        create(admin, "opportunities", {"title": f"Board {tag}", "stage_id": first["id"], "amount": amount,
                                        "currency": "EUR", "probability": probability, "office_id": office})

    def columns(client: Client) -> list[tuple[str, str | None, int, str, str]]:
        r = client("GET", "/v1/opportunities/overview", params={"stage_group_id": group["id"]})
        assert r.status_code == 200, r.text
        return [(s["id"], s["name"], s["count"], s["amount"], s["weighted_amount"]) for s in r.json()["stages"]]

    assert columns(viewer) == [(first["id"], f"ONE {tag}", 2, "150.50", "75.50"),
                               (second["id"], f"TWO {tag}", 0, "0.00", "0.00")]
    assert columns(admin)[0][2:] == (3, "157.50", "76.20")
    bad = admin("GET", "/v1/opportunities/overview", params={"stage_group_id": str(uuid.uuid4())})
    assert bad.status_code == 422 and bad.headers["Content-Type"].startswith("application/problem+json")
    assert admin("GET", "/v1/opportunities/overview", params={"view": "team"}).status_code == 422

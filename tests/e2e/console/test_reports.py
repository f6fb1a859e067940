"""Screen 7, Reports: the stage report and the lead funnel show exactly the records a test made
(its own office), the CSV of a table is that table, the date range changes the funnel, the
charts have their text alternative, and a person who may view neither leads nor opportunities
sees no Reports entry (the route answers 403)."""

from __future__ import annotations

import csv
import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

pytestmark = pytest.mark.e2e


def _cells(row: Locator) -> list[str]:
    return [c.strip() for c in row.locator("th, td").all_inner_texts()]


def _table(page: Page, caption: str) -> Locator:
    return page.get_by_role("table", name=caption, exact=True)


def _rows(table: Locator) -> dict[str, list[str]]:
    """Body rows by their header cell."""
    return {cells[0]: cells for cells in (_cells(r) for r in table.locator("tbody tr").all())}


def _all_rows(table: Locator) -> list[list[str]]:
    """The table as a CSV would have it: header row, body rows, totals row."""
    return [_cells(r) for r in table.locator("thead tr, tbody tr, tfoot tr").all()]


def _steady(rows: list[list[str]]) -> list[list[str]]:
    """Rows without "Median time in stage": a stay that goes on grows with the clock between the
    page and its download (every other cell is the same)."""
    moving = {i for i, header in enumerate(rows[0] if rows else []) if header == "Median time in stage"}
    return [[c for i, c in enumerate(row) if i not in moving] for row in rows]


def _download(page: Page, link_name: str) -> list[list[str]]:
    with page.expect_download() as info:
        page.get_by_role("link", name=link_name, exact=True).click()
    path = Path(info.value.path())
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [[c.strip() for c in row] for row in csv.reader(fh)]


def test_reports_show_the_records_of_the_test_and_their_csv(console, page: Page) -> None:
    tag = uuid.uuid4().hex[:8]
    office, user, roles = f"office-rep-{tag}", f"rep-{tag}", ("marketing", "account_manager")
    lead_stages = [s for s in console.stages("lead") if s.get("active", True)]
    opp_stages = [s for s in console.stages("opportunity") if s.get("active", True)]
    first, second = lead_stages[0], lead_stages[1]
    for stage in (first, first, second):
        console.call("POST", "/leads", user, office=office, roles=roles,
                     json={"title": f"Report lead {tag}", "stage_id": stage["id"]})
    open_a, open_b = opp_stages[0], opp_stages[1]
    for stage, amount, probability in ((open_a, "1000.00", 50), (open_a, "250.50", 20), (open_b, "3000.00", 10)):
        console.call("POST", "/opportunities", user, office=office, roles=roles,
                     json={"title": f"Report opp {tag}", "stage_id": stage["id"], "amount": amount,
                           "currency": "EUR", "probability": probability})

    console.sign_in(page, user=user, office=office, roles=",".join(roles))
    page.get_by_role("link", name="Reports", exact=True).click()
    expect(page.get_by_role("heading", name="Reports", level=1)).to_be_visible()

    # Stage report of leads: 2 + 1 in two stages, every other stage 0, total 3.
    leads = _rows(_table(page, "Leads per stage"))
    assert leads[first["name"]][2] == "2" and leads[second["name"]][2] == "1"
    assert all(cells[2] == "0" for name, cells in leads.items() if name not in (first["name"], second["name"]))
    assert _cells(_table(page, "Leads per stage").locator("tfoot tr"))[2] == "3"
    groups_total = _cells(_table(page, "Leads per stage group").locator("tfoot tr"))
    assert groups_total[:2] == ["Total", "3"]

    # Opportunities: count, amount and weighted amount (amount x probability) per stage.
    opps = _rows(_table(page, "Opportunities per stage"))
    assert opps[open_a["name"]][2:5] == ["2", "1,250.50", "550.10"]
    assert opps[open_b["name"]][2:5] == ["1", "3,000.00", "300.00"]
    assert _cells(_table(page, "Opportunities per stage").locator("tfoot tr"))[2:5] == ["3", "4,250.50", "850.10"]

    # The charts' text alternative: an image named by its title, described with the same numbers.
    count_chart = page.get_by_role("img", name=re.compile("^Leads per stage: count"))
    expect(count_chart).to_be_visible()
    description = page.locator("#chart-opportunities-amount desc").text_content() or ""
    assert f"{open_a['name']}: Amount 1,250.50, Weighted amount 550.10" in description
    assert f"{first['name']}: 2" in (page.locator("#chart-leads-count desc").text_content() or "")

    # The funnel: 3 created today, none converted; the owner's row says the same.
    funnel = _rows(_table(page, "Lead funnel"))
    assert funnel["All leads"][1:4] == ["3", "0", "0.0 %"]
    assert _rows(_table(page, "Lead funnel by owner"))[user][1:3] == ["3", "0"]
    console.assert_accessible(page, "Reports")
    console.screenshot(page, "reports")

    # Every table's CSV is the table.
    for caption in ("Opportunities per stage", "Leads per stage group", "Lead funnel by owner"):
        got, shown = _download(page, f"Download CSV: {caption}"), _all_rows(_table(page, caption))
        assert _steady(got) == _steady(shown), (caption, got, shown)

    # A range that excludes today: nothing created in it; its CSV says so too.
    page.get_by_label("From", exact=True).fill("2001-01-01")
    page.get_by_label("To", exact=True).fill("2001-12-31")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(_table(page, "Lead funnel").locator("tbody tr").first).to_contain_text("All leads")
    assert _rows(_table(page, "Lead funnel"))["All leads"][1:3] == ["0", "0"]
    assert user not in _rows(_table(page, "Lead funnel by owner"))
    assert _download(page, "Download CSV: Lead funnel") == _all_rows(_table(page, "Lead funnel"))
    # The stage report is a snapshot: the range does not change it (the page says so).
    assert _rows(_table(page, "Leads per stage"))[first["name"]][2] == "2"

    # A range the wrong way round is refused on the form, not a crash.
    page.get_by_label("From", exact=True).fill("2001-12-31")
    page.get_by_label("To", exact=True).fill("2001-01-01")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.get_by_text("Must be on or after the From date.")).to_be_visible()
    console.assert_accessible(page, "Reports (range error)")


def test_a_person_without_a_view_permission_sees_no_reports() -> None:
    """Every configured role may view leads or opportunities, so: a token without roles (the
    console in process: the refusal comes before any API call)."""
    from crm_console.app import create_app
    from crm_kit.settings import load_settings
    from crm_kit.web.auth import issue_token

    secret = "test-secret-long-enough-for-hs256-signatures"  # noqa: S105 - a test's own key
    app = create_app(load_settings("console", {
        "CRM_SERVICE_NAME": "console", "CRM_GATEWAY_URL": "http://127.0.0.1:9",
        "CRM_CONSOLE_SECRET_KEY": "test-console-key-0123456789abcdef", "CRM_JWT_SECRET": secret}))
    app.config["TESTING"] = True
    client = app.test_client()
    with client.session_transaction() as session:
        session["token"] = issue_token(secret, user_id="nobody", name="nobody", office_id="office-1", roles=[],
                                       ttl_seconds=600)
    for path in ("/reports", "/reports/leads/stages.csv", "/reports/opportunities/stage-groups.csv",
                 "/reports/leads/funnel.csv"):
        resp = client.get(path)
        assert resp.status_code == 403, path
        assert 'href="/reports"' not in resp.get_data(as_text=True), "no Reports entry in the navigation"

"""Screen 5 in Chromium: activities (email, task, calendar, note).

- A task created from a lead (``/activities/new?lead_id=``) goes back to the lead's Activities
  tab (``/leads/<id>?tab=activities``); it is read back through the API and found in the
  ``/activities`` list.
- The activity shows its lead's stage and changes it (read back through the API); a stale page
  gets the 412 message with **Reload**.
- A note on its own, found in the list filtered by type.
axe-core on the form, the activity page and the list.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.sync_api import Page, expect


def _office() -> str:
    return f"office-acts-{uuid.uuid4().hex[:6]}"


def test_task_from_a_lead_and_its_stage(console: Any, page: Page) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="marketing")
    lead = console.call("POST", "/leads", user, office=office, json={"title": f"Lead {uuid.uuid4().hex[:8]}"})
    subject = f"Call back {uuid.uuid4().hex[:8]}"

    console.open(page, f"/activities/new?lead_id={lead['id']}")
    expect(page.get_by_text(lead["title"]).first).to_be_visible()
    expect(page.get_by_label("Type")).to_have_value("task")
    console.assert_accessible(page, "new activity form")
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Due (UTC)").fill("2026-12-01T09:30")
    page.get_by_role("button", name="Create").click()

    # Back on the lead's Activities tab (screen 3's), which lists it; read back through the API.
    expect(page).to_have_url(re.compile(rf"/leads/{lead['id']}\?tab=activities$"))
    expect(page.get_by_role("heading", level=1, name=lead["title"])).to_be_visible()
    expect(page.get_by_role("link", name=subject)).to_be_visible()
    items = console.call("GET", "/activities", user, office=office, params={"lead_id": lead["id"]})["items"]
    assert [(a["type"], a["subject"], a["due_at"][:16]) for a in items] == [("task", subject, "2026-12-01T09:30")]

    console.open(page, "/activities")
    page.get_by_role("searchbox", name="Search").fill(subject)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=subject).click()
    expect(page.get_by_role("heading", level=1, name=subject)).to_be_visible()

    # The lead's stage, changed from the activity (If-Match on the lead's version).
    stages = [s for s in console.stages("lead") if s.get("active", True) and not s.get("is_end")]
    current = console.call("GET", f"/leads/{lead['id']}", user, office=office)["stage"]
    target = next(s for s in stages if s["id"] != current["id"])
    section = page.get_by_role("region", name="Lead")
    stage = section.get_by_role("combobox", name="Stage")
    expect(stage.locator("option:checked")).to_have_text(current["name"])
    console.assert_accessible(page, "activity page")
    stage.select_option(target["id"])
    section.get_by_role("button", name="Change stage").click()
    expect(page.get_by_text(f"moved to {target['name']}")).to_be_visible()
    assert console.call("GET", f"/leads/{lead['id']}", user, office=office)["stage"]["id"] == target["id"]
    expect(page.get_by_role("region", name="Lead").get_by_role("combobox", name="Stage")
           .locator("option:checked")).to_have_text(target["name"])

    # Someone else changes the lead meanwhile: the page says so, offers Reload, changes nothing.
    console.call("PATCH", f"/leads/{lead['id']}", user, office=office, json={"description": "changed elsewhere"})
    page.get_by_role("region", name="Lead").get_by_role("combobox", name="Stage").select_option(current["id"])
    page.get_by_role("region", name="Lead").get_by_role("button", name="Change stage").click()
    expect(page.get_by_role("alert")).to_contain_text("Someone else changed this lead")
    assert console.call("GET", f"/leads/{lead['id']}", user, office=office)["stage"]["id"] == target["id"]
    page.get_by_role("link", name="Reload").click()
    expect(page.get_by_role("heading", level=1, name=subject)).to_be_visible()


def test_standalone_note(console: Any, page: Page) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="account_manager")
    subject = f"Note {uuid.uuid4().hex[:8]}"

    console.open(page, "/activities")
    page.get_by_role("link", name="New", exact=True).click()
    page.get_by_label("Type").select_option("note")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#activity-subject-error")).to_contain_text("required")  # nothing created
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Body").fill("Met at the fair.\nWants a call in January.")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1, name=subject)).to_be_visible()
    activity_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    saved = console.call("GET", f"/activities/{activity_id}", user, office=office)
    assert (saved["type"], saved["lead_id"], saved["opportunity_id"]) == ("note", None, None)
    assert saved["body"] == "Met at the fair.\nWants a call in January."

    console.open(page, "/activities")
    page.get_by_label("Type").select_option("note")
    page.get_by_role("searchbox", name="Search").fill(subject)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name=subject)).to_be_visible()
    console.assert_accessible(page, "activities list")
    page.get_by_label("Type").select_option("email")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name=subject)).to_have_count(0)

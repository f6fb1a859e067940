"""Screen 1's list view in Chromium: simple search, the advanced filter (the API's 422 under the
box), a bulk stage change with per-item results that the API confirms, the preview panel, and
axe-core."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.sync_api import Page, expect


def test_marketer_searches_filters_bulk_moves_and_previews_leads(page: Page, console: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    user, office = f"u-{tag}", f"o-{tag}"
    who = {"office": office, "roles": ("marketing",)}
    stages = [s for s in console.stages("lead") if s.get("active", True) and not s.get("is_end")]
    titles = [f"Dockside cranes {tag}", f"Harbour pilots {tag}", f"Lock keepers {tag}"]
    ids = {t: console.call("POST", "/leads", user, json={"title": t, "description": f"About {t}"}, **who)["id"]
           for t in titles}

    console.sign_in(page, user, office, "marketing")
    page.get_by_role("link", name="Leads", exact=True).click()
    page.get_by_role("link", name="Leads of my office").click()
    page.get_by_role("link", name="List", exact=True).click()
    table = page.locator("table.records")
    for title in titles:
        expect(table.get_by_role("link", name=title, exact=True)).to_be_visible()
    console.assert_accessible(page, "list")

    # Simple search over the title.
    page.get_by_label("Search", exact=True).fill(f"pilots {tag}")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(table.get_by_role("link", name=titles[1], exact=True)).to_be_visible()
    expect(table.get_by_role("link", name=titles[0], exact=True)).to_have_count(0)

    # A bad advanced filter: the API's own message under the box, tied to it by aria-describedby.
    bad = "title == "
    answer = console.call("GET", "/leads", user, params={"filter": bad}, expect_status=422, **who)
    message = answer["errors"][0]["message"].splitlines()[0]
    page.get_by_label("Search", exact=True).fill("")
    box = page.get_by_label("Advanced search")
    box.fill(bad)
    page.get_by_role("button", name="Search", exact=True).click()
    box = page.get_by_label("Advanced search")
    expect(box).to_have_attribute("aria-invalid", "true")
    described = box.get_attribute("aria-describedby") or ""
    error_id = described.split()[0]
    expect(page.locator(f"#{error_id}")).to_contain_text(message)
    expect(box).to_have_accessible_description(re.compile(re.escape(message)))
    console.assert_accessible(page, "list with a filter error")

    # A good filter finds exactly the record it names.
    box.fill(f'title = "{titles[2]}"')
    page.get_by_role("button", name="Search", exact=True).click()
    expect(table.get_by_role("link", name=titles[2], exact=True)).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(page.get_by_label("Advanced search")).not_to_have_attribute("aria-invalid", "true")

    # Bulk: set the stage of two selected rows; per-item results; the API shows the new stage.
    page.get_by_label("Advanced search").fill("")
    page.get_by_label("Search", exact=True).fill(tag)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(table.locator("tbody tr")).to_have_count(3)
    target = stages[1]
    page.get_by_role("checkbox", name=f"Select {titles[0]}").check()
    page.get_by_role("checkbox", name=f"Select {titles[1]}").check()
    page.get_by_label("Action").select_option(label="Set stage")
    page.get_by_label("Stage", exact=True).select_option(label=target["name"])
    page.get_by_role("button", name="Apply to selected").click()
    results = page.get_by_role("region", name="Results")
    expect(results.get_by_role("status")).to_have_text("2 done, 0 failed.")
    for title in titles[:2]:
        expect(results.get_by_role("row", name=f"{title} Done")).to_be_visible()
        assert console.call("GET", f"/leads/{ids[title]}", user, **who)["stage"]["id"] == target["id"]
    assert console.call("GET", f"/leads/{ids[titles[2]]}", user, **who)["stage"]["id"] != target["id"]
    row = table.get_by_role("row").filter(has=page.get_by_role("link", name=titles[0], exact=True))
    expect(row).to_contain_text(target["name"])
    console.assert_accessible(page, "list with bulk results")

    # The preview panel beside the list shows the chosen record.
    page.get_by_role("link", name=f"Preview {titles[1]}").click()
    panel = page.get_by_role("complementary", name=f"Preview: {titles[1]}")
    expect(panel.get_by_role("heading", name=f"Preview: {titles[1]}")).to_be_focused()
    expect(panel).to_contain_text(target["name"])
    expect(panel).to_contain_text(f"About {titles[1]}")
    expect(panel.get_by_role("link", name=f"Open {titles[1]}")).to_be_visible()
    console.assert_accessible(page, "list with a preview")

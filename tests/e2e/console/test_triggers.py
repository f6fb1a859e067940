"""Screen 6's Triggers in Chromium: a trigger made in the form (started from a board column's menu)
fires on the board, its execution shows in the log, a dry run shows what it would do, loop warnings
show before saving; a non-administrator sees no Triggers entry and gets 403; axe-core on each screen.

Each trigger is limited to the test's own office (a condition), so it never acts on the records of
other tests on the shared platform."""

from __future__ import annotations

import time
import uuid
from typing import Any

from playwright.sync_api import Page, expect


def _column(page: Page, stage: dict[str, Any]) -> Any:
    return page.get_by_role("region", name=stage["name"], exact=True)


def _wait_for(check: Any, what: str, seconds: float = 30.0) -> Any:
    """A bounded wait for another actor's write (the trigger acts asynchronously, after the move)."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_trigger_made_from_a_board_column_fires_logs_and_dry_runs(page: Page, console: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    user, office = f"u-{tag}", f"o-{tag}"
    who = {"office": office, "roles": ("admin",)}
    stages = [s for s in console.stages("lead") if s.get("active", True) and not s.get("is_end")]
    first, target = stages[0], stages[1]
    group = console.call("POST", "/lead-tables/groups", user, json={"code": f"T{tag}".upper(),
                                                                   "names": {"en": f"Trigger group {tag}"}}, **who)
    title = f"Trigger lead {tag}"
    lead = console.call("POST", "/leads", user, json={"title": title, "stage_id": first["id"]}, **who)
    name = f"Enters {target['name']} {tag}"

    console.sign_in(page, user, office, "admin")
    page.get_by_role("link", name="Leads", exact=True).click()
    page.get_by_role("link", name="Leads of my office").click()
    column = _column(page, target)
    column.get_by_text("Column menu").click()
    column.get_by_role("link", name="When a record enters this stage…").click()

    # The form starts with the column's event; its choices are the lead kind's.
    expect(page.get_by_role("heading", name="New trigger", level=1)).to_be_visible()
    expect(page.get_by_label("Kind")).to_have_value("lead")
    expect(page.get_by_label("Event")).to_have_value(f"stage_changed:{target['id']}")
    console.assert_accessible(page, "new trigger")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Office (id)").fill(office)
    page.get_by_label("Action 1").select_option(label=f"Add to group: Trigger group {tag}")
    page.get_by_role("button", name="Check for loops").click()
    expect(page.get_by_role("alert")).to_contain_text("No loops found. Not saved yet.")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("heading", name=f"Trigger {name}", level=1)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text(f"Trigger {name} saved.")
    trigger = next(t for t in console.call("GET", "/triggers", user, **who)["items"] if t["name"] == name)
    assert trigger["event"] == {"type": "stage_changed", "stage_id": target["id"]}
    assert trigger["conditions"] == {"office_id": office}
    assert trigger["actions"] == [{"type": "add_to_group", "group_id": group["id"]}]
    console.assert_accessible(page, "trigger")

    try:
        # The list shows it.
        page.get_by_role("link", name="Triggers", exact=True).first.click()
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name))
        expect(row).to_contain_text(f"Enters stage: {target['name']}")
        expect(row).to_contain_text("Yes")
        console.assert_accessible(page, "triggers list")

        # A card moved to the stage on the board gains the group (the trigger's own, asynchronous write).
        page.get_by_role("link", name="Leads", exact=True).click()
        page.get_by_role("link", name="Leads of my office").click()
        page.get_by_role("button", name=f"Move to ({title})").click()
        page.get_by_role("menuitem", name=target["name"]).click()
        expect(_column(page, target).get_by_role("link", name=title)).to_be_visible()
        _wait_for(lambda: group["id"] in (console.call("GET", f"/leads/{lead['id']}", user, **who)
                                          .get("group_ids") or []), "the trigger's add_to_group")

        # Its execution shows in the log, filtered by trigger and result.
        page.goto(console.url + "/triggers/executions")
        page.get_by_label("Trigger", exact=True).select_option(label=name)
        page.get_by_label("Result").select_option(label="Applied")
        page.get_by_role("button", name="Filter").click()
        log_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=lead["id"]))
        for _ in range(60):  # the log row is the triggers service's write: bounded reloads
            if log_row.count():
                break
            time.sleep(0.5)
            page.reload()
        expect(log_row).to_contain_text("Applied")
        expect(log_row).to_contain_text(f"Add to group: Trigger group {tag}")
        expect(log_row.get_by_role("link", name=name)).to_be_visible()
        console.assert_accessible(page, "executions log")

        # A dry run on the record, picked by search: it is in the stage now, so it would fire.
        page.get_by_role("link", name=name).first.click()
        page.get_by_role("link", name="Dry run").click()
        expect(page.get_by_role("heading", name="Dry run", level=1)).to_be_visible()
        page.get_by_label("Find a lead").fill(title)
        page.get_by_role("button", name="Search").click()
        page.get_by_role("button", name=f"Dry run on {title}").click()
        result = page.get_by_role("region", name=f"Result for {title}")
        expect(result).to_contain_text("It would fire now.")
        expect(result).to_contain_text(f"The record is in the stage '{target['name']}'")
        expect(result.get_by_role("listitem").filter(has_text=f"Add to group: Trigger group {tag}")).to_be_visible()
        console.assert_accessible(page, "dry run")
        # Changing nothing: the lead is as it was.
        assert console.call("GET", f"/leads/{lead['id']}", user, **who)["stage"]["id"] == target["id"]

        # Loop warnings before saving: "added to the group -> set the stage" would call the first one back.
        page.goto(console.url + "/triggers/new?kind=lead")
        # The choices follow the kind (htmx re-renders the fields): opportunity stages, not this lead group.
        opportunity_stage = next(s for s in console.stages("opportunity") if s.get("active", True))
        action = page.get_by_label("Action 1")
        page.get_by_label("Kind").select_option("opportunity")
        expect(action.locator("option", has_text=f"Set stage: {opportunity_stage['name']}")).to_have_count(1)
        expect(action.locator("option", has_text=f"Trigger group {tag}")).to_have_count(0)
        page.get_by_label("Kind").select_option("lead")
        expect(action.locator("option", has_text=f"Add to group: Trigger group {tag}")).to_have_count(1)
        loop_name = f"Loop back {tag}"
        page.get_by_label("Name").fill(loop_name)
        page.get_by_label("Event").select_option(label=f"Is added to group: Trigger group {tag}")
        page.get_by_label("Office (id)").fill(office)
        page.get_by_label("Action 1").select_option(label=f"Set stage: {target['name']}")
        page.get_by_role("button", name="Save", exact=True).click()
        warnings = page.get_by_role("region", name="Loop warnings")
        expect(warnings).to_contain_text(f"'{loop_name}' -> '{name}' -> '{loop_name}'")
        expect(page.get_by_role("button", name="Save anyway")).to_be_visible()
        console.assert_accessible(page, "loop warnings")
        assert loop_name not in [t["name"] for t in console.call("GET", "/triggers", user, **who)["items"]]
    finally:
        console.call("DELETE", f"/triggers/{trigger['id']}", user, **who)


def test_a_non_administrator_sees_no_triggers(page: Page, console: Any) -> None:
    console.assert_administrators_only(page, "Triggers", ("/triggers", "/triggers/new", "/triggers/executions"))
    page.goto(console.url + "/leads")
    expect(page.get_by_text("Column menu")).to_have_count(0)
    expect(page.get_by_role("link", name="When a record enters this stage…")).to_have_count(0)

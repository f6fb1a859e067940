"""Screen 6, Maintenance, in Chromium: an administrator creates a stage group and three stages in
it, reorders them by drag and drop and by the keyboard (the API then has the new indexes), makes
one the standard stage (the API then has only it as default), links an email template to it, and
sees the board's columns follow; a protected role says so; a non-administrator sees no
Maintenance entry and its routes answer 403; axe-core on every maintenance screen.

The catalogue is left as it was found: the standard stage goes back to the one it was, and the
stages, the group and the template made here are deleted (no record uses them)."""

from __future__ import annotations

import uuid
from typing import Any

from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError


def _drag(page: Page, handle: Locator, target: Locator) -> None:
    """Drag ``handle``'s row onto the top of ``target``'s row with real mouse steps (SortableJS
    follows the browser's drag events, which a single jump does not start), and let go only once
    the row sits right above the target. SortableJS moves the row itself while it is dragged, but
    ignores the pointer over a row that is still sliding (``animation``): a drop made then left
    the row one place short in about one run of two. So the pointer goes to the target's top again
    (the target's box read afresh) until the row is in place."""
    box = handle.bounding_box()
    assert box
    moved, above = handle.evaluate("h => h.closest('tr').dataset.id"), target.get_attribute("data-id")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 2, box["y"] + box["height"] / 2 - 6, steps=5)
    in_place = ("([moved, above]) => { const ids = [...document.querySelectorAll('#stage-region tbody tr[data-id]')]"
                ".map((r) => r.dataset.id); return ids.indexOf(moved) === ids.indexOf(above) - 1; }")
    for attempt in range(10):
        to = target.bounding_box()
        assert to
        page.mouse.move(to["x"] + 10, to["y"] + 4 + attempt % 2, steps=20 if attempt == 0 else 2)
        try:
            page.wait_for_function(in_place, arg=[moved, above], timeout=500)
            break
        except PlaywrightTimeoutError:
            continue
    page.mouse.up()


def _order(console: Any, user: str, ids: list[str]) -> list[str]:
    """The ids of ``ids`` in the API's index order."""
    stages = {s["id"]: s for s in console.call("GET", "/lead-stages", user)["items"]}
    return sorted(ids, key=lambda i: (stages[i]["index"], i))


def _rows(page: Page) -> list[str]:
    return page.locator("#stage-region tbody tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-id'))")


def test_administrator_configures_lead_stages(page: Page, console: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    user = f"u-maint-{tag}"
    default_before = next(s for s in console.stages("lead") if s.get("is_default"))
    template = console.call("POST", "/templates", user, json={
        "kind": "email", "name": f"Maint mail {tag}", "subject": "Hello", "body": "Dear {{ record.title }}",
        "visible_at": "lead_stage"})
    names = [f"Stage {letter} {tag}" for letter in "ABC"]
    group_name = f"Group {tag}"
    ids: list[str] = []
    group_id = None
    try:
        console.sign_in(page, user, "office-1", "admin")
        page.get_by_role("link", name="Maintenance", exact=True).click()
        expect(page.get_by_role("heading", name="Maintenance", level=1)).to_be_visible()
        console.assert_accessible(page, "maintenance")

        # A stage group, made in its table.
        page.get_by_role("link", name="Stage groups (Leads)").click()
        expect(page.get_by_role("heading", name="Stage groups (Leads)", level=1)).to_be_visible()
        console.assert_accessible(page, "maintenance table")
        page.get_by_label("Name (English)").fill(group_name)
        page.get_by_label("Name (Dutch)").fill(f"Groep {tag}")
        page.get_by_label("Code").fill(f"MG{tag}")
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("link", name=group_name, exact=True)).to_be_visible()
        group_id = next(g["id"] for g in console.call("GET", "/lead-tables/stage-groups", user)["items"]
                        if g["code"] == f"MG{tag}")

        # Three stages in it, made from the group's own stage list.
        page.goto(console.url + "/maintenance")
        page.get_by_role("link", name="Lead stages").click()
        console.assert_accessible(page, "lead stages")
        page.get_by_role("link", name=group_name, exact=True).click()
        for n, name in enumerate(names):
            page.get_by_role("link", name="New stage").click()
            if n == 0:
                console.assert_accessible(page, "new stage")
            page.get_by_label("Name (English)").fill(name)
            page.get_by_label("Code").fill(f"M{tag}{n}")
            expect(page.get_by_label("Stage group")).to_have_value(group_id)
            page.get_by_role("button", name="Create stage").click()
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        ids = [s["id"] for s in console.call("GET", "/lead-stages", user)["items"]
               if s.get("stage_group_id") == group_id]
        by_name = {s["name"]: s["id"] for s in console.call("GET", "/lead-stages", user)["items"]
                   if s["id"] in ids}
        a, b, c = (by_name[name] for name in names)
        assert _rows(page) == [a, b, c]

        # Drag C above A: C, A, B.
        _drag(page, page.locator(f'tr[data-id="{c}"] .drag-handle'), page.locator(f'tr[data-id="{a}"]'))
        expect(page.locator("#messages")).to_contain_text("The new order is saved.")
        assert _rows(page) == [c, a, b]
        assert _order(console, user, ids) == [c, a, b]

        # The keyboard: B's Move up, with Enter: C, B, A (the focus stays on the button).
        page.get_by_role("button", name=f"Move up ({names[1]})").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#messages")).to_contain_text(f"{names[1]} moved up.")
        assert _rows(page) == [c, b, a]
        assert _order(console, user, ids) == [c, b, a]
        expect(page.get_by_role("button", name=f"Move up ({names[1]})")).to_be_focused()

        # B becomes the standard stage and gets the template.
        page.get_by_role("link", name=names[1], exact=True).click()
        console.assert_accessible(page, "stage")
        expect(page.get_by_text(f"ticking this clears it on {default_before['name']}")).to_be_visible()
        page.get_by_label("Standard", exact=True).check()
        page.get_by_label(f"Maint mail {tag}").check()
        page.get_by_label("Colour", exact=True).fill("#aa3311")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#messages")).to_contain_text(
            f"{names[1]} is now the standard stage; {default_before['name']} no longer is.")
        stages = console.call("GET", "/lead-stages", user)["items"]
        assert [s["id"] for s in stages if s["is_default"]] == [b]
        saved = next(s for s in stages if s["id"] == b)
        assert saved["email_template_ids"] == [template["id"]]
        assert saved["color"].lower() == "#aa3311"

        # The standard stage cannot be deactivated: the API's refusal shows on the form.
        page.get_by_label("Active").uncheck()
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("alert")).to_contain_text("cannot be deactivated")

        # The board's columns follow: the group's tab shows C, B, A.
        page.goto(console.url + f"/leads?tab={group_id}")
        columns = page.locator("section.column[data-stage-id]")
        expect(columns).to_have_count(3)
        assert columns.evaluate_all("cs => cs.map(c => c.getAttribute('data-stage-id'))") == [c, b, a]

        # A protected role says so, and offers no Delete.
        page.goto(console.url + "/maintenance/opportunities/tables/roles")
        page.get_by_role("link", name="Main contact").first.click()
        expect(page.get_by_text("MAIN is protected")).to_be_visible()
        expect(page.get_by_role("button", name="Delete")).to_have_count(0)
        console.assert_accessible(page, "table entry")
    finally:
        _restore(console, user, default_before, ids, group_id, template["id"])


def _restore(console: Any, user: str, default_before: dict[str, Any], ids: list[str], group_id: str | None,
             template_id: str) -> None:
    """Leave the catalogue as it was: the standard stage back, the test's stages, group and template gone."""
    current = console.call("GET", f"/lead-stages/{default_before['id']}", user)
    if not current["is_default"]:
        console.call("PATCH", f"/lead-stages/{current['id']}", user, json={"is_default": True})
    for stage_id in ids:
        console.call("DELETE", f"/lead-stages/{stage_id}", user)
    if group_id:
        console.call("DELETE", f"/lead-tables/stage-groups/{group_id}", user)
    console.call("DELETE", f"/templates/{template_id}", user)


def test_non_administrator_sees_no_maintenance(page: Page, console: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    console.sign_in(page, f"u-mkt-{tag}", f"o-{tag}", "marketing")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Leads")).to_be_visible()
    expect(page.get_by_role("link", name="Maintenance")).to_have_count(0)
    for path in ("/maintenance", "/maintenance/leads/stages", "/maintenance/opportunities/stages/new",
                 "/maintenance/leads/tables/roles"):
        resp = page.goto(console.url + path)
        assert resp is not None and resp.status == 403, path
    resp = page.request.post(console.url + "/maintenance/leads/tables/sources",
                             form={"name_en": "x", "code": f"X{tag}"})
    assert resp.status in (400, 403)  # no CSRF token (400) or no permission (403): nothing is written

"""Who sees what in the console: exactly what the API gives the signed-in person.

A viewer sees no control that would change anything, on any screen; a person of another
office never sees office 1's records, neither on the board, in the list, nor by URL; and the
console reads its own writes (what was just saved shows on the next screen, no waiting).
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

# Every control that changes something, by its accessible name (CONSOLE.md's words).
CHANGING = re.compile(r"^(New|Add|Save|Delete|Move to.*|\+ Opportunity|Create.*|Remove from .*|Upload.*|Apply)$")


def _changing_controls(page: Page) -> list[str]:
    names = []
    for role in ("button", "link"):
        for el in page.get_by_role(role).all():
            name = (el.get_attribute("aria-label") or el.inner_text() or "").strip()
            if CHANGING.match(name) and el.is_visible():
                names.append(f"{role} {name!r}")
    for el in page.locator("summary").all():
        if CHANGING.match(el.inner_text().strip()) and el.is_visible():
            names.append(f"menu {el.inner_text().strip()!r}")
    return names


def test_a_viewer_sees_no_control_that_would_change_anything(console, page: Page) -> None:
    office = f"office-v-{uuid.uuid4().hex[:6]}"
    owner = f"own-{uuid.uuid4().hex[:6]}"
    lead = console.call("POST", "/leads", owner, office=office, roles=("marketing",),
                        json={"title": f"Viewer lead {uuid.uuid4().hex[:6]}"})
    opp = console.call("POST", "/opportunities", owner, office=office, roles=("account_manager",),
                       json={"title": f"Viewer opp {uuid.uuid4().hex[:6]}", "amount": 100, "currency": "EUR"})
    company = console.call("POST", "/companies", owner, office=office, roles=("marketing",),
                           json={"name": f"Viewer Co {uuid.uuid4().hex[:6]}"})
    console.sign_in(page, office=office, roles="viewer")
    screens = [
        "/leads?tab=office", "/leads?tab=office&view=list", "/opportunities?tab=office",
        f"/leads/{lead['id']}", f"/opportunities/{opp['id']}",
        "/contacts", "/companies", f"/companies/{company['id']}", "/job-orders", "/activities",
    ]
    for path in screens:
        console.open(page, path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert _changing_controls(page) == [], f"{path} offers a viewer: {_changing_controls(page)}"
    console.open(page, "/leads?tab=office")
    expect(page.get_by_role("link", name=lead["title"])).to_be_visible()  # they do see the record


def test_another_office_never_sees_office_1s_records(console, page: Page) -> None:
    owner = f"own-{uuid.uuid4().hex[:6]}"
    title = f"Office one only {uuid.uuid4().hex[:6]}"
    lead = console.call("POST", "/leads", owner, office="office-1", roles=("marketing",), json={"title": title})
    console.sign_in(page, office=f"office-x-{uuid.uuid4().hex[:6]}", roles="marketing,account_manager")
    for path in ("/leads?tab=all", "/leads?tab=all&view=list", f"/leads?tab=all&view=list&q={title}"):
        console.open(page, path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.get_by_text(title)).to_have_count(0)
    resp = page.goto(f"{console.url}/leads/{lead['id']}")
    assert resp is not None and resp.status == 404
    expect(page.get_by_text(title)).to_have_count(0)


def test_what_was_just_saved_shows_on_the_next_screen(console, page: Page) -> None:
    """Read-your-writes through the console: a move, then the board, the list and the record page at once."""
    user = console.sign_in(page, office="office-1", roles="marketing")
    stages = [s for s in console.stages("lead") if s.get("active", True)]
    lead = console.call("POST", "/leads", user, office="office-1", roles=("marketing",),
                        json={"title": f"RYW {uuid.uuid4().hex[:6]}", "stage_id": stages[0]["id"]})
    for round_ in range(3):
        target = stages[(round_ + 1) % len(stages)]
        before = console.call("GET", f"/leads/{lead['id']}", user, roles=("marketing",))
        # Move through the board's keyboard menu, as a person does.
        console.open(page, "/leads?tab=mine")
        page.get_by_role("button", name=f"Move to ({lead['title']})").click()
        page.get_by_role("menu").get_by_role("menuitem", name=target["name"], exact=True).click()
        expect(page.get_by_role("status")).to_contain_text(target["name"])
        # At once, on every next screen: the board, the list, the record page.
        console.open(page, "/leads?tab=mine")
        column = page.get_by_role("region", name=target["name"], exact=True)
        expect(column.get_by_role("link", name=lead["title"])).to_be_visible()
        console.open(page, f"/leads?tab=mine&view=list&q={lead['title']}")
        expect(page.get_by_role("row").filter(has_text=lead["title"])).to_contain_text(target["name"])
        console.open(page, f"/leads/{lead['id']}")
        expect(page.get_by_label("Stage", exact=True)).to_have_value(target["id"])
        after = console.call("GET", f"/leads/{lead['id']}", user, roles=("marketing",))
        assert after["stage"]["id"] == target["id"] and after["version"] > before["version"]

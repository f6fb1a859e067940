"""Screen 3's tabs in Chromium: Attachments, Job orders, Contacts, Activities, Placements, Timeline.

Each test is a journey through the record page (``/leads/<id>``, a tab clicked by its name or
opened with ``?tab=<name>``), checked against the API afterwards:

- Attachments: a 3 MB upload whose progress bar reaches its max, downloaded byte for byte, an
  empty file refused with the API's 422 in the tab, deleted; without script the plain form works.
- Contacts: the main contact's role is locked with the reason; an existing contact added with a
  role, its role changed in the list, a new contact with a role, **Remove from lead** (and the
  API's refusal for the main contact shown); a viewer sees no control; the timeline says it all.
- Job orders on an opportunity (the same implementation): an existing one added by search, its
  placement on the Placements tab, a new one created, **Remove from opportunity**; the timeline.
- Activities: **New** opens the activity form, which comes back to the tab listing it; the timeline.
axe-core on every tab.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Locator, Page, expect


def _unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def _office() -> str:
    return f"office-tabs-{uuid.uuid4().hex[:6]}"


def _tab(page: Page, name: str) -> Locator:
    """Open the record page's tab ``name`` (a click, as people do) and return its panel."""
    page.get_by_role("tab", name=name, exact=True).click()
    panel = page.get_by_role("tabpanel", name=name)
    expect(panel.get_by_role("heading", level=2, name=name)).to_be_visible()
    return panel


def _role(console: Any, user: str, office: str, kind: str, name: str) -> dict[str, Any]:
    code = "R" + uuid.uuid4().hex[:8].upper()
    return console.call("POST", f"/{kind}-tables/roles", user, office=office,
                        json={"names": {"en": name}, "code": code, "index": 50})


def test_attachment_upload_with_progress_download_and_delete(console: Any, page: Page, browser: Browser,
                                                             tmp_path: Path) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="marketing")
    lead = console.call("POST", "/leads", user, office=office, json={"title": _unique("Crane hire")})
    content = os.urandom(3 * 1024 * 1024)
    name = f"offer-{uuid.uuid4().hex[:6]}.pdf"

    console.open(page, f"/leads/{lead['id']}?tab=attachments")
    panel = page.get_by_role("tabpanel", name="Attachments")
    expect(panel.get_by_text("No attachments yet.")).to_be_visible()
    console.assert_accessible(page, "record page, Attachments tab")
    panel.get_by_label("File").set_input_files({"name": name, "mimeType": "application/pdf", "buffer": content})
    panel.get_by_label("Type").fill("Offer")
    panel.get_by_role("button", name="Upload").click()

    row = panel.get_by_role("row", name=name)
    expect(row).to_contain_text("Offer")
    expect(row).to_contain_text("3.0 MB")
    bar = panel.get_by_role("progressbar", name="Upload progress")
    expect(bar).to_be_visible()
    value, most = bar.evaluate("e => [e.value, e.max]")
    assert value == most >= len(content), (value, most)
    expect(page.locator("#messages")).to_contain_text(f"{name} was uploaded.")
    console.assert_accessible(page, "record page, Attachments tab after an upload")

    with page.expect_download() as info:
        row.get_by_role("link", name=name).click()
    download = info.value
    assert download.suggested_filename == name
    assert Path(download.path()).read_bytes() == content
    stored = console.call("GET", f"/leads/{lead['id']}/attachments", user, office=office)["items"]
    assert [(a["filename"], a["type"], a["size"]) for a in stored] == [(name, "Offer", len(content))]

    # The API's refusal shows in the tab, with what was typed.
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    panel.get_by_label("File").set_input_files(str(empty))
    panel.get_by_label("Type").fill("Notes")
    panel.get_by_role("button", name="Upload").click()
    expect(panel.get_by_role("alert")).to_contain_text("The file is empty.")
    expect(panel.get_by_role("alert")).to_contain_text("422")
    expect(panel.get_by_label("Type")).to_have_value("Notes")

    page.once("dialog", lambda dialog: dialog.accept())
    panel.get_by_role("row", name=name).get_by_role("button", name="Delete").click()
    expect(panel.get_by_role("row", name=name)).to_have_count(0)
    assert console.call("GET", f"/leads/{lead['id']}/attachments", user, office=office)["items"] == []

    # Without script: the same form is a plain multipart post that comes back to the tab.
    plain = browser.new_context(java_script_enabled=False, locale="en-GB")
    try:
        other = plain.new_page()
        console.sign_in(other, user=user, office=office, roles="marketing")
        console.open(other, f"/leads/{lead['id']}?tab=attachments")
        other.get_by_label("File").set_input_files({"name": "plain.txt", "mimeType": "text/plain",
                                                    "buffer": b"no script needed"})
        other.get_by_label("Type").fill("Notes")
        other.get_by_role("button", name="Upload").click()
        expect(other.get_by_role("row", name="plain.txt")).to_be_visible()
        expect(other.locator("#messages")).to_contain_text("plain.txt was uploaded.")
    finally:
        plain.close()


def test_contacts_roles_locked_main_contact_and_remove_from_lead(console: Any, page: Page, browser: Browser) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="admin")
    tag = uuid.uuid4().hex[:6]
    buyer = _role(console, user, office, "lead", f"Buyer {tag}")
    adviser = _role(console, user, office, "lead", f"Adviser {tag}")
    main = console.call("POST", "/contacts", user, office=office,
                        json={"first_name": "Mila", "last_name": f"Main{tag}"})
    existing = console.call("POST", "/contacts", user, office=office,
                            json={"first_name": "Ezra", "last_name": f"Existing{tag}",
                                  "email": f"ezra{tag}@example.com"})
    lead = console.call("POST", "/leads", user, office=office, json={"title": _unique("Dock gates"),
                                                                     "contact_id": main["id"]})

    console.open(page, f"/leads/{lead['id']}")
    panel = _tab(page, "Contacts")
    main_row = panel.get_by_role("row", name=f"Mila Main{tag}")
    expect(main_row.get_by_role("combobox", name=f"Role of Mila Main{tag}")).to_be_disabled()
    expect(main_row).to_contain_text("Main contact: change it on General.")
    console.assert_accessible(page, "record page, Contacts tab")

    # Add: an existing contact, found by name, with a role.
    panel.get_by_role("button", name="Add", exact=True).click()
    panel.get_by_role("searchbox", name="Find a contact").fill(f"Existing{tag}")
    panel.get_by_role("button", name="Search").click()
    panel.get_by_role("radio", name=f"Ezra Existing{tag}").check()
    panel.get_by_label("Role", exact=True).select_option(label=buyer["name"])
    console.assert_accessible(page, "record page, Contacts tab, Add")
    panel.get_by_role("button", name="Add contact").click()
    row = panel.get_by_role("row", name=f"Ezra Existing{tag}")
    role = row.get_by_role("combobox", name=f"Role of Ezra Existing{tag}")
    expect(role.locator("option:checked")).to_have_text(buyer["name"])

    # Its role, changed in the list.
    role.select_option(label=adviser["name"])
    row.get_by_role("button", name="Change role").click()
    expect(page.locator("#messages")).to_contain_text(f"The role of Ezra Existing{tag} was saved.")
    links = {c["contact_id"]: c
             for c in console.call("GET", f"/leads/{lead['id']}/contacts", user, office=office)["items"]}
    assert links[existing["id"]]["role_id"] == adviser["id"]
    assert links[main["id"]]["role"]["code"] == "MAIN"

    # New: a new contact with a role, then removed from the lead.
    panel.get_by_role("button", name="New", exact=True).click()
    panel.get_by_label("First name").fill("Nora")
    panel.get_by_label("Last name").fill(f"New{tag}")
    panel.get_by_label("Email").fill(f"nora{tag}@example.com")
    panel.get_by_label("Role", exact=True).select_option(label=buyer["name"])
    console.assert_accessible(page, "record page, Contacts tab, New")
    panel.get_by_role("button", name="Create contact").click()
    new_row = panel.get_by_role("row", name=f"Nora New{tag}")
    expect(new_row.get_by_role("combobox", name=f"Role of Nora New{tag}").locator("option:checked")).to_have_text(
        buyer["name"])
    new_row.get_by_role("button", name="Remove from lead").click()
    expect(panel.get_by_role("row", name=f"Nora New{tag}")).to_have_count(0)

    # The main contact cannot be removed here: the API's reason, in the tab.
    main_row.get_by_role("button", name="Remove from lead").click()
    expect(panel.get_by_role("alert")).to_contain_text("main contact")
    expect(panel.get_by_role("alert")).to_contain_text("409")
    names = sorted(c["contact"]["last_name"] for c in
                   console.call("GET", f"/leads/{lead['id']}/contacts", user, office=office)["items"])
    assert names == sorted([f"Main{tag}", f"Existing{tag}"])

    timeline = _tab(page, "Timeline")
    for text in (f"Contact Ezra Existing{tag} added with role {buyer['name']}",
                 f"Role of Ezra Existing{tag} changed from {buyer['name']} to {adviser['name']}",
                 f"Contact Nora New{tag} added with role {buyer['name']}", f"Contact Nora New{tag} removed"):
        expect(timeline.get_by_role("row", name=text)).to_be_visible()
    console.assert_accessible(page, "record page, Timeline tab")

    # A viewer of the same office sees the contacts and no control that changes them.
    viewing = browser.new_context(locale="en-GB")
    try:
        viewer = viewing.new_page()
        console.sign_in(viewer, office=office, roles="viewer")
        console.open(viewer, f"/leads/{lead['id']}?tab=contacts")
        seen = viewer.get_by_role("tabpanel", name="Contacts")
        expect(seen.get_by_role("row", name=f"Ezra Existing{tag}")).to_contain_text(adviser["name"])
        expect(seen.get_by_role("button")).to_have_count(0)
        expect(seen.get_by_role("combobox")).to_have_count(0)
    finally:
        viewing.close()


def test_job_orders_and_placements_of_an_opportunity(console: Any, page: Page) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="account_manager")
    company = console.call("POST", "/companies", user, office=office, json={"name": _unique("Harbour Works")})
    existing = console.call("POST", "/job-orders", user, office=office,
                            json={"title": _unique("Crane operator"), "company_id": company["id"], "status": "open"})
    candidate = _unique("Robin Candidate")
    console.call("POST", "/placements", user, office=office,
                 json={"job_order_id": existing["id"], "candidate_name": candidate, "start_date": "2027-02-01"})
    opportunity = console.call("POST", "/opportunities", user, office=office, json={"title": _unique("Quay wall")})

    console.open(page, f"/opportunities/{opportunity['id']}")
    panel = _tab(page, "Job orders")
    expect(panel.get_by_text("No job orders linked yet.")).to_be_visible()
    panel.get_by_role("button", name="Add", exact=True).click()
    panel.get_by_role("searchbox", name="Find a job order").fill(existing["title"])
    panel.get_by_role("button", name="Search").click()
    panel.get_by_role("radio", name=existing["title"]).check()
    console.assert_accessible(page, "record page, Job orders tab, Add")
    panel.get_by_role("button", name="Add job order").click()
    row = panel.get_by_role("row", name=existing["title"])
    expect(row).to_contain_text(company["name"])
    expect(row).to_contain_text("open")

    placements = _tab(page, "Placements")
    expect(placements.get_by_role("row", name=candidate)).to_contain_text(existing["title"])
    console.assert_accessible(page, "record page, Placements tab")

    panel = _tab(page, "Job orders")
    created = _unique("Rigger")
    panel.get_by_role("button", name="New", exact=True).click()
    panel.get_by_label("Title").fill(created)
    panel.get_by_label("Status").fill("draft")
    console.assert_accessible(page, "record page, Job orders tab, New")
    panel.get_by_role("button", name="Create job order").click()
    expect(panel.get_by_role("row", name=created)).to_contain_text("draft")
    panel.get_by_role("row", name=created).get_by_role("button", name="Remove from opportunity").click()
    expect(panel.get_by_role("row", name=created)).to_have_count(0)
    expect(page.locator("#messages")).to_contain_text(f"Job order “{created}” removed.")
    console.assert_accessible(page, "record page, Job orders tab")
    linked = console.call("GET", f"/opportunities/{opportunity['id']}/job-orders", user, office=office)["items"]
    assert [j["job_order_id"] for j in linked] == [existing["id"]]

    timeline = _tab(page, "Timeline")
    for text in (f"Job order “{existing['title']}” linked", f"Job order “{created}” linked",
                 f"Job order “{created}” removed"):
        expect(timeline.get_by_role("row", name=text)).to_be_visible()


def test_activity_created_from_the_record(console: Any, page: Page) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="marketing")
    lead = console.call("POST", "/leads", user, office=office, json={"title": _unique("Ferry terminal")})
    subject = _unique("Call the harbour master")

    console.open(page, f"/leads/{lead['id']}")
    panel = _tab(page, "Activities")
    expect(panel.get_by_text("No activities yet.")).to_be_visible()
    console.assert_accessible(page, "record page, Activities tab")
    panel.get_by_role("link", name="New", exact=True).click()

    expect(page.get_by_role("heading", level=1, name="New activity")).to_be_visible()
    page.get_by_label("Subject").fill(subject)
    page.get_by_role("button", name="Create").click()

    # Back on the record's Activities tab, which lists it.
    expect(page.get_by_role("heading", level=1, name=lead["title"])).to_be_visible()
    panel = page.get_by_role("tabpanel", name="Activities")
    expect(panel.get_by_role("row", name=subject)).to_contain_text("Task")
    items = console.call("GET", f"/leads/{lead['id']}/activities", user, office=office)["items"]
    assert [a["subject"] for a in items] == [subject]

    timeline = _tab(page, "Timeline")
    expect(timeline.get_by_role("row", name=f"Activity “{subject}” added")).to_be_visible()
    expect(timeline.get_by_role("row", name=f"Created “{lead['title']}”")).to_be_visible()

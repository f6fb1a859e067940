"""Screen 4 in Chromium: contacts, companies and job orders (lists, record pages, tabs).

- A company and a contact are created through the console's forms and found in the lists by
  search.
- A contact's **Leads** tab shows the leads it is on (as the lead's contact_id and linked with a
  role), its **Opportunities** tab the opportunities; **Remove from lead** takes a non-main link
  off (read back through the API) and, for the main contact, shows the API's reason.
- A company with a lead shows it on its **Leads** tab and cannot be deleted (the API's 409 on the
  page, the company still there); a job order shows the lead it is linked to under **Related to**;
  someone of another office cannot change that company (the hidden-record rule, in words).
- A viewer sees the files but no New, Save, Delete or Remove control (nor the activity's Stage).
axe-core on the lists and the record pages.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote_plus

from playwright.sync_api import Browser, Page, expect


def _unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def _office() -> str:
    return f"office-files-{uuid.uuid4().hex[:6]}"


def _role(console: Any, user: str, office: str) -> str:
    """A lead contact role that is neither MAIN nor SIGN (the starter's, or one made for the test)."""
    roles = console.call("GET", "/lead-tables/roles", user, office=office)["items"]
    found = next((r for r in roles if r.get("code") not in ("MAIN", "SIGN") and r.get("active", True)), None)
    if found is None:
        found = console.call("POST", "/lead-tables/roles", user, office=office,
                             json={"names": {"en": "Decision maker"}, "code": f"D{uuid.uuid4().hex[:6]}"})
    return found["id"]


def test_company_and_contact_created_in_forms_and_found_by_search(console: Any, page: Page) -> None:
    office = _office()
    console.sign_in(page, office=office, roles="marketing")
    company, last_name = _unique("Acme Staffing"), _unique("Lovelace")

    console.open(page, "/companies")
    page.get_by_role("link", name="New", exact=True).click()
    page.get_by_label("Name").fill(company)
    page.get_by_label("City").fill("Utrecht")
    page.get_by_label("Website").fill("not a url")
    page.get_by_role("button", name="Create").click()
    # The API's field message next to the field; nothing created.
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("#file-website-error")).to_contain_text("URL")
    page.get_by_label("Website").fill("https://acme.example")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1, name=company)).to_be_visible()
    console.assert_accessible(page, "company record page")

    console.open(page, "/contacts")
    page.get_by_role("link", name="New", exact=True).click()
    page.get_by_label("First name").fill("Ada")
    page.get_by_label("Last name").fill(last_name)
    page.get_by_label("Email").fill("ada@acme.example")
    page.get_by_label("Company").select_option(label=company)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1, name=f"Ada {last_name}")).to_be_visible()
    contact_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    saved = console.call("GET", f"/contacts/{contact_id}", "check", office=office)
    assert saved["email"] == "ada@acme.example" and saved["company_id"]

    # Save changes a field (If-Match on the version shown), read back through the API.
    page.get_by_label("Phone").fill("+31 20 123 4567")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("saved")).to_be_visible()
    assert console.call("GET", f"/contacts/{contact_id}", "check", office=office)["phone"] == "+31 20 123 4567"

    console.open(page, "/companies")
    page.get_by_role("searchbox", name="Search").fill(company)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name=company)).to_be_visible()
    console.assert_accessible(page, "companies list")

    console.open(page, "/contacts")
    page.get_by_role("searchbox", name="Search").fill(last_name)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("row")).to_have_count(2)  # the header and the one contact
    page.get_by_role("link", name=f"Ada {last_name}").click()
    expect(page.get_by_role("heading", level=1, name=f"Ada {last_name}")).to_be_visible()
    console.assert_accessible(page, "contacts list")


def test_contact_tabs_and_remove_from_lead(console: Any, page: Page) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="admin")
    contact = console.call("POST", "/contacts", user, office=office,
                           json={"first_name": "Grace", "last_name": _unique("Hopper")})
    main_lead = console.call("POST", "/leads", user, office=office,
                             json={"title": _unique("Main lead"), "contact_id": contact["id"]})
    other_lead = console.call("POST", "/leads", user, office=office, json={"title": _unique("Other lead")})
    console.call("POST", f"/leads/{other_lead['id']}/contacts", user, office=office,
                 json={"contact_id": contact["id"], "role_id": _role(console, user, office)})
    opportunity = console.call("POST", "/opportunities", user, office=office,
                               json={"title": _unique("Deal"), "contact_id": contact["id"]})

    console.open(page, f"/contacts/{contact['id']}")
    tab = page.get_by_role("navigation", name="Records of this contact")
    expect(tab.get_by_role("link", name="Leads")).to_have_attribute("aria-current", "page")
    rows = page.get_by_role("row")
    expect(page.get_by_role("link", name=main_lead["title"])).to_be_visible()
    expect(page.get_by_role("link", name=other_lead["title"])).to_be_visible()
    console.assert_accessible(page, "contact record page, Leads tab")

    # Remove from lead: the link with a role goes (read back through the API).
    rows.filter(has=page.get_by_role("link", name=other_lead["title"])).get_by_role(
        "button", name="Remove from lead").click()
    expect(page.get_by_text("Removed from lead.")).to_be_visible()
    expect(page.get_by_role("link", name=other_lead["title"])).to_have_count(0)
    linked = console.call("GET", f"/leads/{other_lead['id']}/contacts", user, office=office)["items"]
    assert contact["id"] not in {item["contact_id"] for item in linked}

    # The main contact: the API refuses, and the page says why; the link stays.
    page.get_by_role("row").filter(has=page.get_by_role("link", name=main_lead["title"])).get_by_role(
        "button", name="Remove from lead").click()
    expect(page.get_by_role("alert")).to_contain_text("main contact")
    expect(page.get_by_role("link", name=main_lead["title"])).to_be_visible()

    tab.get_by_role("link", name="Opportunities").click()
    expect(page.get_by_role("link", name=opportunity["title"])).to_be_visible()
    expect(page.get_by_role("button", name="Remove from opportunity")).to_be_visible()


def test_company_in_use_and_job_order_related_to(console: Any, page: Page, browser: Browser) -> None:
    office = _office()
    user = console.sign_in(page, office=office, roles="admin")
    company = console.call("POST", "/companies", user, office=office, json={"name": _unique("Used Company")})
    lead = console.call("POST", "/leads", user, office=office,
                        json={"title": _unique("Company lead"), "company_id": company["id"]})
    job = console.call("POST", "/job-orders", user, office=office, json={"title": _unique("3 welders")})
    console.call("POST", f"/leads/{lead['id']}/job-orders", user, office=office, json={"job_order_id": job["id"]})

    console.open(page, f"/companies/{company['id']}")
    expect(page.get_by_role("link", name=lead["title"])).to_be_visible()  # its Leads tab
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Delete").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("cannot be deleted")
    expect(alert).to_contain_text("company_id")  # the API's own reason
    assert questions == ["Delete this? This cannot be undone."], "Delete asks first"
    console.call("GET", f"/companies/{company['id']}", user, office=office, expect_status=200)

    console.open(page, f"/job-orders/{job['id']}")
    related = page.get_by_role("region", name="Related to")
    expect(related.get_by_role("link", name=lead["title"])).to_be_visible()
    console.assert_accessible(page, "job order record page")
    console.open(page, "/job-orders?q=" + quote_plus(job["title"]))
    expect(page.get_by_role("link", name=job["title"])).to_be_visible()
    console.assert_accessible(page, "job orders list")

    # Someone of another office may not change a company that a lead they cannot see shows.
    other = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-GB")
    try:
        page2 = other.new_page()
        console.sign_in(page2, office=_office(), roles="marketing")
        console.open(page2, f"/companies/{company['id']}")
        page2.get_by_label("City").fill("Elsewhere")
        page2.get_by_role("button", name="Save").click()
        expect(page2.get_by_role("alert")).to_contain_text("another office")
        assert console.call("GET", f"/companies/{company['id']}", user, office=office)["city"] is None
    finally:
        other.close()


def test_viewer_sees_no_writing_controls(console: Any, page: Page) -> None:
    office = _office()
    seeder = f"seed-{uuid.uuid4().hex[:6]}"
    company = console.call("POST", "/companies", seeder, office=office, json={"name": _unique("Viewed Company")})
    contact = console.call("POST", "/contacts", seeder, office=office,
                           json={"first_name": "Vera", "last_name": _unique("Viewer"), "company_id": company["id"]})
    lead = console.call("POST", "/leads", seeder, office=office,
                        json={"title": _unique("Viewed lead"), "contact_id": contact["id"]})
    job = console.call("POST", "/job-orders", seeder, office=office, json={"title": _unique("Viewed job")})
    activity = console.call("POST", "/activities", seeder, office=office,
                            json={"type": "task", "subject": _unique("Viewed task"), "lead_id": lead["id"]})
    console.sign_in(page, office=office, roles="viewer")

    writing = re.compile(r"^(New|Save|Delete|Create|Remove from lead|Remove from opportunity|Change stage)$")
    for path, shown in ((f"/companies?q={quote_plus(company['name'])}", company["name"]),
                        (f"/companies/{company['id']}", lead["title"]),
                        (f"/contacts/{contact['id']}", lead["title"]),
                        (f"/job-orders/{job['id']}", "Related to"),
                        ("/job-orders", "Job orders"),
                        ("/contacts", "Contacts"),
                        ("/activities", "Activities"),
                        (f"/activities/{activity['id']}", activity["subject"])):
        console.open(page, path)
        expect(page.get_by_text(shown).first).to_be_visible()
        expect(page.get_by_role("button", name=writing)).to_have_count(0)
        expect(page.get_by_role("link", name=writing)).to_have_count(0)
        expect(page.get_by_role("textbox")).to_have_count(0)
    expect(page.get_by_role("combobox", name="Stage")).to_have_count(0)
    expect(page.get_by_text("Stage:")).to_be_visible()
    console.assert_accessible(page, "activity page (viewer)")

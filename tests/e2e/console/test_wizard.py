"""Screen 2, the wizard (New), in Chromium: Company, Contact, then the lead or opportunity.

Each test is a person's journey from the overview's **New** button to the new record's page,
checked through the API afterwards; the wizard's steps are plain form posts, the API's
``POST /v1/{records}/wizard`` judges **Create**, and a refused step shows why on that step.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e


def _unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def _new(console: Any, page: Page, records: str) -> None:
    """The overview's New button opens the wizard on its first step."""
    console.open(page, f"/{records}")
    page.get_by_role("link", name="New", exact=True).first.click()
    expect(page.get_by_role("heading", name="Company", exact=True)).to_be_visible()


def _open_record(console: Any, page: Page, records: str, title: str) -> str:
    """After Create: the record's page, its title the heading and the flashed message; its id."""
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text(title)
    path = page.url.split(console.url, 1)[-1]
    prefix = f"/{records}/"
    assert path.startswith(prefix), path
    return path.removeprefix(prefix).split("?")[0]


def test_lead_without_company_back_keeps_what_was_entered(console: Any, page: Page) -> None:
    """A lead with company None: the contact step says there is none, Back keeps the fields, and
    the API has the lead with neither company nor contact."""
    user = console.sign_in(page, roles="marketing")
    title = _unique("Wizard lead")
    _new(console, page, "leads")
    console.assert_accessible(page, "wizard: company")
    page.get_by_role("radio", name="None").check()
    page.get_by_role("button", name="Next").click()

    expect(page.get_by_role("heading", name="Contact", exact=True)).to_be_visible()
    expect(page.get_by_text("has no company, so it has no contact either")).to_be_visible()
    page.get_by_role("button", name="Next").click()

    expect(page.get_by_role("heading", name="Lead", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Create an empty lead")).to_be_visible()
    console.assert_accessible(page, "wizard: lead")
    page.get_by_label("Title").fill(title)
    page.get_by_label("Description").fill("From the wizard")
    page.get_by_role("button", name="Back").click()
    expect(page.get_by_role("heading", name="Contact", exact=True)).to_be_visible()
    page.get_by_role("button", name="Back").click()
    expect(page.get_by_role("radio", name="None")).to_be_checked()
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Title")).to_have_value(title)  # Back and Next kept it
    expect(page.get_by_label("Description")).to_have_value("From the wizard")
    page.get_by_role("button", name="Create").click()

    lead_id = _open_record(console, page, "leads", title)
    lead = console.call("GET", f"/leads/{lead_id}", user)
    assert lead["title"] == title and lead["description"] == "From the wizard"
    assert lead["company_id"] is None and lead["contact_id"] is None
    assert lead["owner_id"] == user


def test_opportunity_with_new_company_and_new_contact(console: Any, page: Page) -> None:
    """An opportunity with a new company and a new contact: the contact is its main contact."""
    user = console.sign_in(page, roles="account_manager")
    company, last, title = _unique("Wizard Co"), _unique("Smit"), _unique("Wizard deal")
    _new(console, page, "opportunities")
    expect(page.get_by_role("radio", name="None")).to_have_count(0)  # an opportunity needs both
    page.get_by_role("radio", name="Create new").check()
    page.get_by_role("textbox", name="Name (required)").fill(company)
    page.get_by_role("textbox", name="City").fill("Utrecht")
    page.get_by_role("button", name="Next").click()

    expect(page.get_by_role("heading", name="Contact", exact=True)).to_be_visible()
    page.get_by_role("radio", name="Create new").check()
    page.get_by_label("First name").fill("Anna")
    page.get_by_label("Last name").fill(last)
    page.get_by_role("textbox", name="Email", exact=True).fill("anna@example.com")
    console.assert_accessible(page, "wizard: contact")
    console.screenshot(page, "wizard")
    page.get_by_role("button", name="Next").click()

    expect(page.get_by_role("heading", name="Opportunity", exact=True)).to_be_visible()
    page.get_by_label("Title").fill(title)
    page.get_by_label("Amount").fill("12000.50")
    page.get_by_label("Currency").fill("EUR")
    page.get_by_label("Probability (%)").fill("40")
    console.assert_accessible(page, "wizard: opportunity")
    page.get_by_role("button", name="Create").click()

    opp_id = _open_record(console, page, "opportunities", title)
    opp = console.call("GET", f"/opportunities/{opp_id}", user, roles=("account_manager",))
    assert opp["amount"] == "12000.50" and opp["currency"] == "EUR" and opp["probability"] == 40
    assert opp["company_id"] and opp["contact_id"]
    assert console.call("GET", f"/companies/{opp['company_id']}", user)["name"] == company
    contact = console.call("GET", f"/contacts/{opp['contact_id']}", user)
    assert contact["last_name"] == last and contact["company_id"] == opp["company_id"]
    tab = console.call("GET", f"/opportunities/{opp_id}/contacts", user, roles=("account_manager",))["items"]
    main = [item for item in tab if item["role"] and item["role"].get("code") == "MAIN"]
    assert [item["contact_id"] for item in main] == [opp["contact_id"]]


def test_lead_copied_from_the_contacts_existing_lead(console: Any, page: Page) -> None:
    """Find existing company and contact (by name), then Find an existing lead and make a copy."""
    user = console.sign_in(page, roles="marketing")
    company_name, last, source_title = _unique("Copy Co"), _unique("Jansen"), _unique("Original lead")
    company = console.call("POST", "/companies", user, json={"name": company_name})
    contact = console.call("POST", "/contacts", user,
                           json={"first_name": "Piet", "last_name": last, "company_id": company["id"]})
    priority = console.call("GET", "/lead-tables/priorities", user)["items"][0]
    original = console.call("POST", "/leads", user, json={
        "title": source_title, "description": "Three welders", "company_id": company["id"],
        "contact_id": contact["id"], "priority_id": priority["id"]})

    _new(console, page, "leads")
    page.get_by_label("Company name").fill(company_name)
    page.get_by_label("Company name").press("Enter")  # searches
    page.get_by_role("radio", name=company_name).check()
    page.get_by_role("button", name="Next").click()

    expect(page.get_by_role("heading", name="Contact", exact=True)).to_be_visible()
    page.get_by_role("radio", name=f"Piet {last}").check()  # the company's contacts, offered at once
    page.get_by_role("button", name="Next").click()

    expect(page.get_by_role("heading", name="Lead", exact=True)).to_be_visible()
    page.get_by_role("radio", name="Find an existing lead and make a copy").check()
    page.get_by_role("button", name=f"Copy {source_title}").click()
    expect(page.get_by_label("Title")).to_have_value(source_title)  # prefilled from the copied lead
    expect(page.get_by_label("Description")).to_have_value("Three welders")
    console.assert_accessible(page, "wizard: copy")
    copy_title = f"{source_title} (copy)"
    page.get_by_label("Title").fill(copy_title)
    page.get_by_role("button", name="Create").click()

    copy_id = _open_record(console, page, "leads", copy_title)
    assert copy_id != original["id"]
    copy = console.call("GET", f"/leads/{copy_id}", user, roles=("marketing",))
    assert copy["description"] == "Three welders" and copy["priority_id"] == priority["id"]
    assert copy["company_id"] == company["id"] and copy["contact_id"] == contact["id"]
    assert console.call("GET", f"/leads/{original['id']}", user)["title"] == source_title


def test_a_refused_step_shows_why_on_that_step_and_creates_nothing(console: Any, page: Page) -> None:
    """A new contact with an invalid email: Create is refused by the API's contact step; the
    Contact step comes back with the reason, the field marked, and nothing exists."""
    user = console.sign_in(page, roles="marketing")
    company, last, title = _unique("Refused Co"), _unique("Refused"), _unique("Refused lead")
    _new(console, page, "leads")
    page.get_by_role("button", name="Next").click()  # Find existing, nothing chosen: said on the step
    expect(page.get_by_role("alert")).to_contain_text("Choose a company")
    expect(page.get_by_label("Company name")).to_have_attribute("aria-invalid", "true")
    page.get_by_role("radio", name="Create new").check()
    page.get_by_role("textbox", name="Name (required)").fill(company)
    page.get_by_role("button", name="Next").click()
    page.get_by_role("radio", name="Create new").check()
    page.get_by_label("First name").fill("Bad")
    page.get_by_label("Last name").fill(last)
    page.get_by_role("textbox", name="Email", exact=True).fill("not-an-email")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Title").fill(title)
    page.get_by_role("button", name="Create").click()

    expect(page.get_by_role("heading", name="Contact", exact=True)).to_be_visible()
    expect(page.get_by_role("alert")).to_be_visible()
    email = page.get_by_role("textbox", name="Email", exact=True)
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_accessible_description("Not a valid email address.")
    expect(email).to_have_value("not-an-email")
    console.assert_accessible(page, "wizard: refused contact")
    for path, q in (("/leads", title), ("/companies", company), ("/contacts", last)):
        assert console.call("GET", path, user, params={"q": q})["items"] == [], path

    email.fill("fixed@example.com")  # corrected, the same wizard goes through
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Title")).to_have_value(title)
    page.get_by_role("button", name="Create").click()
    lead_id = _open_record(console, page, "leads", title)
    lead = console.call("GET", f"/leads/{lead_id}", user)
    assert lead["company_id"] and lead["contact_id"]

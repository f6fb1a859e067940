"""English and Dutch in Chromium: a Dutch browser gets the console in Dutch, the board's columns
named by the catalogue's Dutch names (as the API gives them for ``Accept-Language: nl``), and the
language switch in the header turns the console and the catalogue's names into English."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect


@pytest.fixture
def dutch_page(browser: Browser) -> Iterator[Page]:
    """A browser whose language is Dutch (its requests say ``Accept-Language: nl-NL``)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, locale="nl-NL")
    ctx.set_default_timeout(15_000)
    yield ctx.new_page()
    ctx.close()


def _stage_names(console: Any, user: str, office: str, language: str) -> dict[str, str]:
    """The opportunity stages' names in ``language``, by id, as the API resolves them."""
    resp = requests.get(f"{console.api}/opportunity-stages", timeout=30,
                        headers={**console.auth(user, office), "Accept-Language": language})
    assert resp.status_code == 200, resp.text[:500]
    return {stage["id"]: stage["name"] for stage in resp.json()["items"]}


def _board_columns(page: Page) -> list[str]:
    """The stage ids of the board's columns, left to right."""
    columns = page.locator(".board > section[data-stage-id]")
    expect(columns.first).to_be_visible()
    return columns.evaluate_all("els => els.map(el => el.dataset.stageId)")


def test_a_dutch_browser_gets_dutch_and_the_switch_turns_it_into_english(dutch_page: Page, console: Any) -> None:
    page = dutch_page
    tag = uuid.uuid4().hex[:8]
    user, office = f"u-{tag}", f"o-{tag}"
    dutch = _stage_names(console, user, office, "nl")
    english = _stage_names(console, user, office, "en")

    # The sign-in page is Dutch already: signing in through its Dutch labels.
    page.goto(console.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "nl")
    expect(page.get_by_role("heading", name="Inloggen", level=1)).to_be_visible()
    page.get_by_label("Gebruiker").fill(user)
    page.get_by_label("Kantoor").fill(office)
    page.get_by_label("Rollen").fill("admin")
    page.get_by_role("button", name="Inloggen").click()
    expect(page.get_by_role("button", name="Uitloggen")).to_be_visible()

    # The opportunities' board in Dutch: nav, heading, New, and the catalogue's Dutch stage names.
    nav = page.get_by_role("navigation", name="Hoofdmenu")
    nav.get_by_role("link", name="Kansen", exact=True).click()
    expect(page.get_by_role("heading", name="Kansen", level=1)).to_be_visible()
    expect(nav.get_by_role("link", name="Kansen", exact=True)).to_have_attribute("aria-current", "page")
    for name in ("Leads", "Contactpersonen", "Organisaties", "Vacatures", "Activiteiten"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Nieuw", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Alle kansen")).to_be_visible()
    columns = _board_columns(page)
    assert any(dutch[stage] != english[stage] for stage in columns), "the catalogue has no Dutch names"
    for stage in columns:
        expect(page.get_by_role("region", name=dutch[stage], exact=True)).to_be_visible()
    console.assert_accessible(page, "board in Dutch")

    # The switch ("Taal") to English: the console and the catalogue's names in English.
    page.get_by_label("Taal").select_option("en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Opportunities", level=1)).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Opportunities", exact=True)).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="Contacts", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="New", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert _board_columns(page) == columns
    for stage in columns:
        expect(page.get_by_role("region", name=english[stage], exact=True)).to_be_visible()
        if dutch[stage] != english[stage]:
            expect(page.get_by_role("region", name=dutch[stage], exact=True)).to_have_count(0)

    # The choice is kept for the session, over the browser's Dutch; the switch goes back to Dutch.
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Opportunities", level=1)).to_be_visible()
    page.get_by_label("Language").select_option("nl")
    expect(page.locator("html")).to_have_attribute("lang", "nl")
    expect(page.get_by_role("heading", name="Kansen", level=1)).to_be_visible()

"""The console in a real browser: Debian's Chromium driven by Playwright for Python.

Nothing downloads a browser: Playwright launches ``/usr/bin/chromium`` (``.ci/run`` installs
it). If it cannot start, every browser test fails with the reason, never skips.

Fixtures:
- ``browser``: one Chromium for the session.
- ``page``: a fresh browser context (its own cookies) and page per test.
- ``console``: a ``Console`` helper bound to the shared e2e platform: signs a person in
  through the development form (``CRM_CONSOLE_DEV_SIGNIN``, as `make run` sets it), seeds data
  through the API, checks accessibility with axe-core and saves the README's screenshots.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Error, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
BLOCKING_IMPACTS = ("serious", "critical")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); "
                    "the console's tests never download a browser.", pytrace=False)
    with sync_playwright() as pw:
        try:
            launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(f"Chromium ({CHROMIUM}) did not start: {exc}", pytrace=False)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-GB")
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


class Console:
    """The console of the shared e2e platform, as people and tests use it."""

    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self.url = platform.console_url
        self.api = platform.gateway_url + "/v1"
        self._axe = Axe()

    # -- people ---------------------------------------------------------------------------------
    def sign_in(self, page: Page, user: str = "", office: str = "office-1", roles: str = "admin") -> str:
        """Sign ``user`` in through the development form; returns the user name used."""
        user = user or f"u-{uuid.uuid4().hex[:8]}"
        page.goto(self.url + "/")
        page.get_by_label("User").fill(user)
        page.get_by_label("Office").fill(office)
        page.get_by_label("Roles").fill(roles)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        return user

    def open(self, page: Page, path: str) -> None:
        page.goto(self.url + path)

    # -- data through the API (as the same person, so office rules hold) ---------------------------
    def auth(self, user: str, office: str = "office-1", roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
        return self.platform.auth(roles, user=user, office=office)

    def call(self, method: str, path: str, user: str, *, office: str = "office-1",
             roles: tuple[str, ...] = ("admin",), expect_status: int | None = None, **kw: Any) -> Any:
        resp = requests.request(method, self.api + path, headers=self.auth(user, office, roles), timeout=30, **kw)
        if expect_status is not None:
            assert resp.status_code == expect_status, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        elif resp.status_code >= 400:
            raise AssertionError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content and "json" in resp.headers.get("Content-Type", "") else None

    def stages(self, kind: str = "lead") -> list[dict[str, Any]]:
        items = self.call("GET", f"/{kind}-stages", "seed")["items"]
        return sorted(items, key=lambda s: s.get("index", 0))

    # -- checks ---------------------------------------------------------------------------------
    def assert_administrators_only(self, page: Page, link: str, paths: tuple[str, ...]) -> None:
        """A marketing user (signed in here, in an office of their own) sees no ``link`` in the main
        navigation, and each of ``paths`` answers them 403."""
        tag = uuid.uuid4().hex[:8]
        self.sign_in(page, f"u-{tag}", f"o-{tag}", "marketing")
        nav = page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link", name="Leads", exact=True)).to_be_visible()
        expect(nav.get_by_role("link", name=link)).to_have_count(0)
        for path in paths:
            response = page.goto(self.url + path)
            assert response is not None and response.status == 403, path

    def assert_accessible(self, page: Page, screen: str) -> None:
        """axe-core on the page as it is: no serious or critical violation."""
        results = self._axe.run(page)
        bad = [v for v in results.response.get("violations", []) if v.get("impact") in BLOCKING_IMPACTS]
        details = "\n".join(
            f"- {v['id']} ({v['impact']}): {v['help']} -> "
            + "; ".join(n.get("target", [""])[0] if isinstance(n.get("target"), list) else str(n.get("target"))
                        for n in v.get("nodes", [])[:5])
            for v in bad)
        assert not bad, f"axe-core on {screen} ({page.url}):\n{details}"

    def screenshot(self, page: Page, name: str) -> Path:
        """A screenshot for the README (docs/screenshots/<name>.png), taken by the tests."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        return path


@pytest.fixture(scope="session")
def console(platform: Any) -> Console:
    return Console(platform)

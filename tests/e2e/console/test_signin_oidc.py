"""Single sign-on in a real browser, against a real OpenID provider.

The provider is panva's certified ``oidc-provider`` (``tests/e2e/console/oidc``), started by the
``oidc_provider`` fixture (tests/e2e/conftest.py) with a key the platform trusts
(``CRM_JWT_PUBLIC_KEY``, ``CRM_JWT_AUDIENCE`` = the API's resource, ``CRM_JWT_ISSUER``). In
Chromium: the console's "Sign in with single sign-on" link, the provider's own sign-in and
consent pages, back in the console signed in with the provider's access token (its name, its
office's leads from the API), then sign-out. A forged callback and a sign-in cancelled at the
provider end on the sign-in page with a message, not an error page.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import jwt
import pytest
import requests
from playwright.sync_api import Page, expect

from crm_kit.web.auth import TokenVerifier

pytestmark = pytest.mark.e2e

SSO_LINK = "Sign in with single sign-on"


def _sign_in_at_the_provider(page: Page, provider: Any, login: str) -> None:
    """The provider's own pages: its sign-in form, then its consent page."""
    expect(page).to_have_url(re.compile("^" + re.escape(provider.issuer) + "/interaction/"))
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password the development pages accept")
    page.get_by_role("button", name="Sign-in").click()
    expect(page.get_by_role("button", name="Continue")).to_be_visible()
    page.get_by_role("button", name="Continue").click()


def _create_lead(platform: Any, title: str, office: str) -> dict[str, Any]:
    r = requests.post(f"{platform.gateway_url}/v1/leads", json={"title": title},
                      headers=platform.auth(("marketing",), user=f"seed-{office}", office=office), timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def test_sign_in_with_single_sign_on_then_sign_out(platform, oidc_provider, page: Page):
    console = platform.console_url
    mine = _create_lead(platform, f"SSO office-2 lead {uuid.uuid4().hex[:8]}", "office-2")

    page.goto(f"{console}/")
    page.get_by_role("link", name=SSO_LINK).click()
    _sign_in_at_the_provider(page, oidc_provider, "ann")

    # Back in the console, signed in as the provider's account, on the leads overview.
    expect(page).to_have_url(re.compile("^" + re.escape(console) + "/"))
    expect(page.locator(".who .user")).to_contain_text("Ann Marketing")
    expect(page.locator(".who .user")).to_contain_text("office-2")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Leads")).to_be_visible()

    # The console's API calls carry the provider's token: the office's lead is on its board.
    response = page.goto(f"{console}/leads?tab=office")
    assert response is not None and response.status == 200
    expect(page.get_by_role("link", name=mine["title"])).to_be_visible()
    # The roles claim came through: marketing may view opportunities too.
    expect(page.get_by_role("link", name="Opportunities")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name=SSO_LINK)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    # Protected pages send the browser to sign in again.
    page.goto(f"{console}/leads")
    expect(page).to_have_url(re.compile(re.escape(console) + r"/signin\?next=(/|%2F)leads"))
    expect(page.get_by_role("link", name=SSO_LINK)).to_be_visible()


def test_sign_in_comes_back_to_the_page_asked_for(platform, oidc_provider, page: Page):
    console = platform.console_url
    page.goto(f"{console}/leads?tab=office")
    expect(page).to_have_url(re.compile(re.escape(console) + r"/signin\?next="))
    page.get_by_role("link", name=SSO_LINK).click()
    _sign_in_at_the_provider(page, oidc_provider, "ann")
    expect(page).to_have_url(f"{console}/leads?tab=office")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_a_callback_with_a_wrong_state_is_a_message_not_an_error(platform, oidc_provider, page: Page):
    console = platform.console_url
    # The browser has started a sign-in (so its session holds a state), then a forged callback arrives.
    page.goto(f"{console}/signin/sso")
    expect(page).to_have_url(re.compile("^" + re.escape(oidc_provider.issuer) + "/"))
    response = page.goto(f"{console}/signin/callback?code=forged&state=not-the-state-we-sent")
    assert response is not None and response.status == 200
    expect(page.locator("#messages")).to_contain_text("could not be completed")
    expect(page.get_by_role("link", name=SSO_LINK)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    # Without any state at all, the same.
    r = requests.get(f"{console}/signin/callback?code=x", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303) and r.headers["Location"].endswith("/")


def test_cancelling_at_the_provider_is_a_message(platform, oidc_provider, page: Page):
    console = platform.console_url
    page.goto(f"{console}/")
    page.get_by_role("link", name=SSO_LINK).click()
    expect(page).to_have_url(re.compile("^" + re.escape(oidc_provider.issuer) + "/interaction/"))
    page.get_by_role("link", name="[ Cancel ]").click()
    expect(page).to_have_url(re.compile("^" + re.escape(console) + "/"))
    expect(page.locator("#messages")).to_contain_text("cancelled or refused")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def _provider_token(oidc_provider: Any, **overrides: Any) -> str:
    s = oidc_provider.settings
    now = int(time.time())
    claims = {"sub": "ann", "office": "office-2", "roles": ["marketing"], "name": "Ann Marketing",
              "iss": s.issuer, "aud": s.resource, "iat": now, "exp": now + 300, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, s.private_key, algorithm="RS256",
                      headers={"kid": s.kid})


def test_the_api_takes_provider_tokens_with_its_audience_and_issuer_and_dev_tokens(platform, oidc_provider):
    """The kit's rule on the live platform: aud/iss are required of RS256 tokens, HS256 ones carry neither."""
    url = f"{platform.gateway_url}/v1/leads"
    good = _provider_token(oidc_provider)
    assert requests.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=30).status_code == 200
    for wrong in ({"aud": "https://another.example/api"}, {"aud": None}, {"iss": "http://127.0.0.1:1"}):
        token = _provider_token(oidc_provider, **wrong)
        r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 401, (wrong, r.text)
    assert requests.get(url, headers=platform.auth(("viewer",)), timeout=30).status_code == 200


def test_the_kit_verifies_with_the_provider_jwks(oidc_provider):
    """CRM_JWT_JWKS_URL: the verifier finds the provider's key by kid in its published JWKS."""
    s = oidc_provider.settings
    verifier = TokenVerifier("unused-hs256-secret-long-enough-for-the-kit",
                             jwks_url=oidc_provider.discovery["jwks_uri"], audience=s.resource, issuer=s.issuer)
    assert verifier.verify(_provider_token(oidc_provider)).office_id == "office-2"
    with pytest.raises(Exception) as refused:
        verifier.verify(_provider_token(oidc_provider, aud="https://another.example/api"))
    assert getattr(refused.value, "status", None) == 401

"""The console's edges, in process: security headers, CSRF, cookies, sign-in rules, the asset budget.

The screens themselves are tested in a real browser against the real platform
(tests/e2e/console); these checks need no gateway.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm_console.app import create_app
from crm_console.session import safe_next
from crm_kit.settings import load_settings

STATIC = Path(__file__).resolve().parents[1] / "src" / "crm_console" / "static"
BUDGET_BYTES = 100 * 1024


def _app(**env: str) -> Flask:
    settings = load_settings("console", {
        "CRM_SERVICE_NAME": "console",
        "CRM_GATEWAY_URL": "http://127.0.0.1:9",  # nothing listens: these tests never reach it
        "CRM_CONSOLE_SECRET_KEY": "test-console-key-0123456789abcdef",
        "CRM_JWT_SECRET": "test-secret-long-enough-for-hs256-signatures",
        **env,
    })
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client() -> FlaskClient:
    return _app(CRM_CONSOLE_DEV_SIGNIN="true").test_client()


def _csrf(client: FlaskClient) -> str:
    page = client.get("/signin").get_data(as_text=True)
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, "every page carries its CSRF token for scripts"
    return found.group(1)


def test_pages_forbid_inline_script_and_framing(client: FlaskClient) -> None:
    resp = client.get("/signin")
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    html = resp.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline <script> on any page"
    assert not re.search(r"\son[a-z]+=", html), "no inline event handler attributes"
    assert " style=" not in html, "no inline style attributes (CSP style-src 'self')"


def test_session_cookie_is_http_only_secure_and_lax(client: FlaskClient) -> None:
    resp = client.post("/signin/dev", data={"user": "ann", "office": "office-1", "roles": "marketing",
                                            "csrf_token": _csrf(client)})
    assert resp.status_code == 302
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("crm_console="))
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie


def test_a_post_without_the_csrf_token_is_refused_and_signs_no_one_in(client: FlaskClient) -> None:
    client.get("/signin")
    resp = client.post("/signin/dev", data={"user": "ann", "office": "office-1", "roles": "admin"})
    assert resp.status_code == 400
    assert "Reload the page" in resp.get_data(as_text=True)
    assert client.get("/leads").status_code == 302, "still signed out"


def test_sign_out_needs_the_csrf_token_too(client: FlaskClient) -> None:
    assert client.post("/signout").status_code == 400


def test_the_dev_sign_in_form_exists_only_when_switched_on() -> None:
    off = _app().test_client()
    page = off.get("/").get_data(as_text=True)
    assert 'name="user"' not in page and "Sign in" in page
    resp = off.post("/signin/dev", data={"user": "ann", "office": "office-1", "roles": "admin",
                                         "csrf_token": _csrf(off)})
    assert resp.status_code in (302, 404)
    assert off.get("/leads").status_code == 302, "no session was made"


def test_bad_dev_sign_in_input_is_explained_on_the_form(client: FlaskClient) -> None:
    resp = client.post("/signin/dev", data={"user": "", "office": "x y", "roles": "wizard",
                                            "csrf_token": _csrf(client)})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert html.count('aria-invalid="true"') == 3


def test_protected_pages_send_people_to_sign_in_and_back(client: FlaskClient) -> None:
    resp = client.get("/opportunities?tab=all")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/signin?next=")


@pytest.mark.parametrize("target, ok", [
    ("/leads?tab=all", True), ("/", True),
    ("//evil.example/x", False), ("https://evil.example/", False), ("/\\evil.example", False), ("leads", False),
    ("", False), (None, False),
])
def test_only_same_origin_paths_are_followed_after_sign_in(target: str | None, ok: bool) -> None:
    assert safe_next(target) == (target if ok else None)


def test_operational_endpoints_answer_without_a_session(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["gateway"].startswith("unavailable")
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
def test_metrics_are_not_served_through_a_proxy(client: FlaskClient, header: str) -> None:
    """The ingress sends "/" to the console: /metrics through it (or the gateway) is not found."""
    value = "for=203.0.113.7" if header == "Forwarded" else "203.0.113.7"
    resp = client.get("/metrics", headers={header: value})
    assert resp.status_code == 404 and b"crm_http" not in resp.data


def test_own_js_and_css_stay_within_the_budget() -> None:
    """The console's own scripts and styles (not the vendored libraries), gzip-compressed, under 100 KB."""
    own = [p for p in STATIC.rglob("*") if p.suffix in (".js", ".css") and "vendor" not in p.parts]
    assert own, "the console has its own JS and CSS"
    compressed = sum(len(gzip.compress(p.read_bytes(), 9)) for p in own)
    assert compressed < BUDGET_BYTES, f"own JS+CSS is {compressed} bytes compressed (budget {BUDGET_BYTES})"

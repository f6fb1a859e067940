"""Token (401) and permission (403) checks at the gateway, before anything is forwarded."""

from __future__ import annotations

import time

import jwt
import pytest
from gateway_helpers import PROBLEM, SECRET, auth, token

ROLE_CASES = [
    # (role, method, path, allowed)
    ("viewer", "GET", "/v1/leads", True),
    ("viewer", "POST", "/v1/leads", False),
    ("viewer", "PATCH", "/v1/opportunities/o1", False),
    ("viewer", "GET", "/v1/companies", True),
    ("viewer", "POST", "/v1/companies", False),
    ("viewer", "GET", "/v1/lead-stages", True),
    ("viewer", "GET", "/v1/triggers", False),
    ("marketing", "POST", "/v1/leads", True),
    ("marketing", "DELETE", "/v1/leads/l1", True),
    ("marketing", "POST", "/v1/leads/l1/convert", True),
    ("marketing", "POST", "/v1/opportunities", False),
    ("marketing", "GET", "/v1/opportunities", True),
    ("marketing", "PATCH", "/v1/opportunities/o1", False),
    ("marketing", "POST", "/v1/contacts", True),
    ("marketing", "POST", "/v1/lead-stages", False),
    ("account_manager", "PATCH", "/v1/opportunities/o1", True),
    ("account_manager", "POST", "/v1/opportunities/o1/contacts", True),
    ("account_manager", "POST", "/v1/leads", False),
    ("account_manager", "POST", "/v1/leads/l1/contacts", False),
    ("account_manager", "GET", "/v1/leads/l1/timeline", True),
    ("account_manager", "GET", "/v1/trigger-executions", False),
    ("admin", "POST", "/v1/triggers", True),
    ("admin", "PATCH", "/v1/opportunity-tables/sources/s1", True),
    ("nobody-role", "GET", "/v1/lead-stages", True),  # catalogue reads: any valid token
    ("nobody-role", "GET", "/v1/leads", False),
]


@pytest.mark.parametrize(("role", "method", "path", "allowed"), ROLE_CASES,
                         ids=[f"{r} {m} {p}" for r, m, p, _ in ROLE_CASES])
def test_permissions_per_role(client, echo, role, method, path, allowed):
    kwargs = {"json": {"title": "x"}} if method in ("POST", "PATCH") else {}
    r = client.open(path, method=method, headers=auth([role]), **kwargs)
    if allowed:
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.json["path"] == path and r.json["method"] == method
        assert len(echo.hits) == 1
    else:
        assert r.status_code == 403
        assert r.content_type == PROBLEM
        assert r.json["status"] == 403 and ":" in r.json["detail"]
        assert echo.hits == []  # refused at the gateway: the service never saw it


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer not.a.jwt"},
    {"Authorization": f"Bearer {token(secret='another-secret-that-is-long-enough-for-hs256')}"},
    {"Authorization": f"Bearer {token(ttl=-600)}"},
], ids=["none", "basic", "empty", "malformed", "bad-signature", "expired"])
def test_missing_bad_and_expired_tokens_are_401(client, echo, headers):
    r = client.get("/v1/leads", headers=headers)
    assert r.status_code == 401
    assert r.content_type == PROBLEM
    assert r.json["status"] == 401 and r.json["type"].endswith("/unauthenticated") and r.json["detail"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert echo.hits == []


def test_expired_token_says_so(client):
    r = client.get("/v1/leads", headers={"Authorization": f"Bearer {token(ttl=-600)}"})
    assert "expired" in r.json["detail"]


def test_unsigned_token_is_refused(client, echo):
    forged = jwt.encode({"sub": "u", "roles": ["admin"], "exp": int(time.time()) + 60}, key=None, algorithm="none")
    assert client.get("/v1/leads", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert echo.hits == []


def test_me_answers_the_caller(client, echo):
    r = client.get("/v1/me", headers=auth(["marketing", "viewer"], user="u-42"))
    assert r.status_code == 200
    assert r.json == {
        "id": "u-42", "name": "Uma User", "office_id": "office-1", "roles": ["marketing", "viewer"],
        "permissions": sorted({"leads:view", "leads:create", "leads:edit", "leads:delete", "opportunities:view",
                               "files:view", "files:edit"}),
    }
    assert echo.hits == []  # the gateway's own endpoint


def test_me_needs_a_token(client):
    r = client.get("/v1/me")
    assert r.status_code == 401 and r.content_type == PROBLEM


def test_role_map_comes_from_settings(make_gateway, echo):
    app = make_gateway(echo.url, CRM_ROLE_PERMISSIONS='{"auditor": ["leads:view"]}')
    c = app.test_client()
    assert c.get("/v1/leads", headers=auth(["auditor"])).status_code == 200
    assert c.get("/v1/opportunities", headers=auth(["auditor"])).status_code == 403
    assert c.get("/v1/me", headers=auth(["auditor"])).json["permissions"] == ["leads:view"]


def test_unknown_path_is_404_problem(client, echo):
    for headers in ({}, auth()):
        r = client.get("/v1/no-such-thing", headers=headers)
        assert r.status_code == 404 and r.content_type == PROBLEM
        assert r.json["status"] == 404
    assert client.get("/nope").status_code == 404
    assert echo.hits == []


def test_wrong_method_is_405_with_allow(client, echo):
    r = client.put("/v1/leads/l1", json={}, headers=auth())
    assert r.status_code == 405 and r.content_type == PROBLEM
    assert r.headers["Allow"] == "GET, HEAD, PATCH, DELETE, OPTIONS"
    assert echo.hits == []


def test_own_endpoint_with_another_method_is_405(client):
    r = client.post("/v1/me", json={}, headers=auth())
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_options_is_answered_by_the_gateway(client, echo):
    r = client.options("/v1/leads")
    assert r.status_code == 204
    assert r.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert echo.hits == []


def test_secret_is_the_settings_one(make_gateway, echo):
    c = make_gateway(echo.url, CRM_JWT_SECRET="a-completely-different-secret-of-enough-length").test_client()
    assert c.get("/v1/leads", headers=auth()).status_code == 401
    assert SECRET not in c.get("/v1/leads", headers=auth()).get_data(as_text=True)


def _signed(**claims: object) -> dict[str, str]:
    base: dict[str, object] = {"sub": "u-1", "name": "U", "office": "office-1", "roles": ["admin"],
                               "exp": int(time.time()) + 600}
    base.update(claims)
    payload = {k: v for k, v in base.items() if v is not ...}
    return {"Authorization": "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256")}


@pytest.mark.parametrize("claims", [
    {"sub": ...}, {"sub": ""}, {"sub": 7}, {"office": ...}, {"office": ""}, {"office": None}, {"office": ["x"]},
    {"roles": ...}, {"roles": "admin"}, {"roles": [1]}, {"exp": ...}, {"exp": int(time.time()) - 31},
], ids=lambda c: "{'exp': 31 s ago}" if isinstance(c.get("exp"), int) else repr(c))  # ids stable across workers
def test_tokens_without_the_contracts_claims_are_401_at_the_gateway(client, echo, claims):
    for method, path in (("GET", "/v1/leads"), ("GET", "/v1/me"), ("POST", "/v1/leads/wizard")):
        r = client.open(path, method=method, headers=_signed(**claims), json={} if method == "POST" else None)
        assert (r.status_code, r.content_type) == (401, PROBLEM), (path, r.json)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert echo.hits == []


def test_clock_skew_of_up_to_30_seconds_is_tolerated(client, echo):
    assert client.get("/v1/me", headers=_signed(exp=int(time.time()) - 20)).status_code == 200
    assert client.get("/v1/me", headers=_signed(exp=int(time.time()) - 40)).status_code == 401

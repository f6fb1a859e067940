"""The contract's protocol rules on the live platform, through the gateway's gunicorn (issue 15):
a 413 that leaves the client's connection usable, strong If-Match, the token claims, localised
answers saying their language, oversized headers as 431 problem+json and an unservable
Accept as 406."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests

pytestmark = pytest.mark.e2e

TIMEOUT = 60
PROBLEM = "application/problem+json"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def admin(platform) -> dict[str, str]:
    return platform.auth(("admin",), user="protocol-admin", office="office-1")


def _problem(r: requests.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} {r.headers.get('Content-Type')} {r.text[:300]!r}"
    assert r.headers["Content-Type"] == PROBLEM, r.headers
    body = dict(r.json())
    assert body["status"] == status and body["detail"]
    return body


# -- 413 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [2 * MiB, 9 * MiB])
def test_a_413_leaves_the_session_usable(platform, admin, size):
    with requests.Session() as session:
        session.headers.update(admin)
        before = session.get(f"{platform.gateway_url}/v1/leads", params={"page_size": "1"}, timeout=TIMEOUT)
        assert before.status_code == 200
        body = b'{"title": "' + b"x" * size + b'"}'
        r = session.post(f"{platform.gateway_url}/v1/leads", data=body,
                         headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
        _problem(r, 413)
        r = session.get(f"{platform.gateway_url}/v1/leads", params={"page_size": "1"}, timeout=TIMEOUT)
        assert r.status_code == 200
        # and again, on whatever connection the session has now
        _problem(session.post(f"{platform.gateway_url}/v1/companies", data=body,
                              headers={"Content-Type": "application/json"}, timeout=TIMEOUT), 413)
        assert session.get(f"{platform.gateway_url}/v1/me", timeout=TIMEOUT).status_code == 200


def test_an_unread_body_refused_for_its_token_leaves_the_session_usable(platform):
    with requests.Session() as session:
        r = session.post(f"{platform.gateway_url}/v1/leads", data=b'{"title": "' + b"x" * 900_000 + b'"}',
                         headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
        _problem(r, 401)
        assert session.get(f"{platform.gateway_url}/healthz", timeout=TIMEOUT).status_code == 200


# -- If-Match -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("create", "item"), [
    (("/v1/leads", {"title": "Weak etag"}), "/v1/leads/{id}"),
    (("/v1/companies", {"name": "Weak etag"}), "/v1/companies/{id}"),
    (("/v1/lead-tables/sources", {"names": {"en": "Weak"}, "code": "WEAK{tag}"}), "/v1/lead-tables/sources/{id}"),
    (("/v1/triggers", {"name": "Weak", "kind": "lead", "active": False, "event": {"type": "created"},
                       "actions": [{"type": "set_stage", "stage_id": "none"}]}), "/v1/triggers/{id}"),
])
def test_a_weak_etag_never_matches_if_match(platform, admin, create, item):
    tag = uuid.uuid4().hex[:6].upper()
    with requests.Session() as session:
        session.headers.update(admin)
        path, body = create
        body = {k: (v.format(tag=tag) if isinstance(v, str) else v) for k, v in body.items()}
        r = session.post(platform.gateway_url + path, json=body, timeout=TIMEOUT)
        if r.status_code == 422 and "trigger" in path:  # a set_stage action needs a real stage
            stage = session.get(f"{platform.gateway_url}/v1/lead-stages", timeout=TIMEOUT).json()["items"][0]
            body["actions"] = [{"type": "set_stage", "stage_id": stage["id"]}]
            r = session.post(platform.gateway_url + path, json=body, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        created = r.json()
        url = platform.gateway_url + item.format(id=created["id"])
        etag = session.get(url, timeout=TIMEOUT).headers["ETag"]
        assert etag == f'"{created["version"]}"'
        change = {"title": "changed"} if "leads" in path else {"name": "changed"} if "names" not in body \
            else {"code": f"CHANGED{tag}"}
        for weak in (f"W/{etag}", f'W/{etag}, W/"999"'):
            _problem(session.patch(url, json=change, headers={"If-Match": weak}, timeout=TIMEOUT), 412)
            _problem(session.delete(url, headers={"If-Match": weak}, timeout=TIMEOUT), 412)
        again = session.get(url, timeout=TIMEOUT)
        assert again.status_code == 200 and again.json()["version"] == created["version"]  # nothing written
        assert session.patch(url, json=change, headers={"If-Match": etag}, timeout=TIMEOUT).status_code == 200


# -- tokens -------------------------------------------------------------------------------------

def _forged(platform, **claims: Any) -> dict[str, str]:
    base: dict[str, Any] = {"sub": "proto-user", "name": "P", "office": "office-1", "roles": ["admin"],
                            "iat": int(time.time()), "exp": int(time.time()) + 600}
    base.update(claims)
    payload = {k: v for k, v in base.items() if v is not ...}
    return {"Authorization": "Bearer " + jwt.encode(payload, platform.config.jwt_secret, algorithm="HS256")}


BAD_CLAIMS = [
    {"sub": ...}, {"sub": ""}, {"sub": 12}, {"office": ...}, {"office": ""}, {"office": ["office-1"]},
    {"roles": ...}, {"roles": "admin"}, {"roles": ["admin", None]}, {"exp": ...}, {"exp": "soon"},
]


@pytest.mark.parametrize("claims", BAD_CLAIMS, ids=repr)
def test_tokens_without_the_contracts_claims_are_401_everywhere(platform, claims):
    headers = _forged(platform, **claims)
    for base, path in ((platform.gateway_url, "/v1/me"), (platform.gateway_url, "/v1/lead-stages"),
                       (platform.api_url("catalogue"), "/v1/lead-stages"), (platform.api_url("leads"), "/v1/leads"),
                       (platform.api_url("linking"), "/v1/companies"), (platform.api_url("triggers"), "/v1/triggers")):
        r = requests.get(base + path, headers=headers, timeout=TIMEOUT)
        _problem(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_expiry_has_30_seconds_of_leeway(platform):
    assert requests.get(f"{platform.gateway_url}/v1/me", headers=_forged(platform, exp=int(time.time()) - 15),
                        timeout=TIMEOUT).status_code == 200
    _problem(requests.get(f"{platform.gateway_url}/v1/me", headers=_forged(platform, exp=int(time.time()) - 45),
                          timeout=TIMEOUT), 401)


# -- languages ----------------------------------------------------------------------------------

def test_localised_answers_carry_content_language_and_vary(platform, admin):
    base = platform.gateway_url
    for path in ("/v1/lead-stages", "/v1/opportunity-tables/sources"):
        for language, expected in (("nl", "nl"), ("en-GB, en;q=0.9", "en"), ("fr", "en")):
            r = requests.get(base + path, headers={**admin, "Accept-Language": language}, timeout=TIMEOUT)
            assert r.status_code == 200
            # Every language the page's names came in: other tests' entries may have English names only.
            languages = [tag.strip() for tag in r.headers.get("Content-Language", "").split(",")]
            assert expected in languages and set(languages) <= {"en", "nl"}, (path, language, r.headers)
            assert "accept-language" in r.headers.get("Vary", "").lower(), r.headers
    stage = requests.get(f"{base}/v1/lead-stages", headers=admin, timeout=TIMEOUT).json()["items"][0]
    r = requests.get(f"{base}/v1/lead-stages/{stage['id']}", headers={**admin, "Accept-Language": "nl"},
                     timeout=TIMEOUT)
    assert r.headers.get("Content-Language") == "nl" and "accept-language" in r.headers["Vary"].lower()
    with requests.Session() as session:
        session.headers.update(admin)
        lead = session.post(f"{base}/v1/leads", json={"title": "Localised"}, timeout=TIMEOUT).json()
        r = session.get(f"{base}/v1/leads/{lead['id']}", headers={"Accept-Language": "nl"}, timeout=TIMEOUT)
        assert r.status_code == 200 and r.headers.get("Content-Language") == "nl", r.headers
        assert "accept-language" in r.headers.get("Vary", "").lower()
        r = session.get(f"{base}/v1/leads", headers={"Accept-Language": "nl"}, params={"page_size": "5"},
                        timeout=TIMEOUT)
        assert "nl" in r.headers.get("Content-Language", "") and "accept-language" in r.headers["Vary"].lower()


def test_names_in_a_language_that_is_not_configured_are_422(platform, admin):
    r = requests.post(f"{platform.gateway_url}/v1/lead-tables/sources", headers=admin, timeout=TIMEOUT,
                      json={"names": {"en": "Fair", "fr": "Salon"}, "code": f"F{uuid.uuid4().hex[:6]}"})
    body = _problem(r, 422)
    assert [e["field"] for e in body["errors"]] == ["names.fr"]


# -- headers and Accept -------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"X-Big": "b" * 10_000},  # the gateway's own check (names the header)
    {"X-Huge": "h" * 100_000},  # beyond gunicorn's field limit: gunicorn answers, in problem+json too
    {f"X-Many-{i}": "m" for i in range(150)},  # more fields than gunicorn takes
    {f"X-Wide-{i}": "w" * 2000 for i in range(20)},  # each fine, 40 KB in all
], ids=["one-10k", "one-100k", "150-fields", "40k-in-all"])
def test_oversized_headers_are_431_problem_json(platform, admin, headers):
    r = requests.get(f"{platform.gateway_url}/v1/leads", headers={**admin, **headers}, timeout=TIMEOUT)
    _problem(r, 431)
    assert r.headers.get("X-Content-Type-Options") == "nosniff"


def test_what_gunicorn_refuses_itself_is_problem_json(platform):
    address = urlsplit(platform.gateway_url)
    with socket.create_connection((address.hostname, address.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /v1/leads HTTP/1.1\r\nHost: x\r\nBad Header Name: x\r\n\r\n")
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 400") and "Content-Type: application/problem+json" in answer, answer
    assert '"status": 400' in answer


@pytest.mark.parametrize(("path", "accept"), [
    ("/v1/leads", "text/html"), ("/v1/lead-stages", "application/xml"), ("/v1/companies", "text/csv"),
    ("/v1/triggers", "application/json;q=0"), ("/v1/me", "image/png"),
])
def test_an_accept_the_route_cannot_serve_is_406_problem_json(platform, admin, path, accept):
    r = requests.get(platform.gateway_url + path, headers={**admin, "Accept": accept}, timeout=TIMEOUT)
    _problem(r, 406)
    ok = requests.get(platform.gateway_url + path, headers={**admin, "Accept": f"{accept}, application/json;q=0.5"
                                                            if "q=0" not in accept else "*/*"}, timeout=TIMEOUT)
    assert ok.status_code == 200


def test_the_wizard_answer_says_its_language(platform, admin):
    r = requests.post(f"{platform.gateway_url}/v1/leads/wizard", headers={**admin, "Accept-Language": "nl"},
                      json={"company": {"mode": "none"}, "record": {"mode": "empty", "data": {"title": "Wizard nl"}}},
                      timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    assert r.headers.get("Content-Language") == "nl" and "accept-language" in r.headers.get("Vary", "").lower()

"""Who may call what, on the live platform: every route x method x default role, through the
gateway and straight at the owning service, and the office rule for records.

The matrix is read from the code, not written out by hand: the gateway's route table
(``crm_gateway.routes.ROUTES``) plus the gateway's own endpoints (``/v1/me``, ...; read from
the app the gateway builds), with path variables filled by fresh UUIDs (and a real
``{table}``). For each, with no token the answer is 401; with a default role that lacks the
route's permission, 403; with one that has it, neither (and never a 5xx: the ids exist
nowhere, so that is mostly 404 or 422). Services are asked directly too - the gateway is not
their only guard: each verifies the token and the permission itself.

Cross-office: a non-admin of another office, holding every permission the action needs,
gets 404 for another office's lead or opportunity - the record, its tabs, its writes - and
bulk actions on it fail per item; nothing changes. An admin sees every office.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from test_records_gateway import Client, create

from crm_gateway.app import create_app as create_gateway_app
from crm_gateway.routes import ROUTES, SEGMENT_CHOICES
from crm_kit.settings import SERVICES, load_settings
from crm_kit.web.auth import DEFAULT_ROLE_PERMISSIONS

pytestmark = pytest.mark.e2e

ROLES = ("admin", "marketing", "account_manager", "viewer")
GATEWAY = "gateway"
TABLE = "sources"  # a real {table}: the route table only matches the eight catalogue tables
assert TABLE in SEGMENT_CHOICES["table"]
TIMEOUT = 60  # seconds for one request (a loaded CI box)
# Every answer of every service carries these (the kit's edge).
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}

_FLASK_VAR = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")
_TABLE_VAR = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Endpoint:
    """One method on one path family: who owns it and what it needs."""

    owner: str  # "gateway" (answered by the gateway itself) or the service it is forwarded to
    method: str
    pattern: str  # the route template, e.g. /v1/leads/{id}
    path: str  # the pattern with fresh ids
    permission: str | None  # None: any valid token

    @property
    def upload(self) -> bool:
        return self.method == "POST" and self.pattern.endswith("/attachments")


def _fill(pattern: str) -> str:
    return _TABLE_VAR.sub(lambda m: TABLE if m.group(1) == "table" else str(uuid.uuid4()), pattern)


def _flask_rule_variants(rule: str) -> list[str]:
    """A Flask rule as route templates: ``<any(a, b):x>`` gives one per choice, ``<x>`` is ``{x}``."""
    variants = [""]
    pos = 0
    for m in _FLASK_VAR.finditer(rule):
        literal = rule[pos:m.start()]
        converter, args, name = m.groups()
        if converter == "any":
            choices = [c.strip().strip("'\"") for c in (args or "").split(",")]
            variants = [v + literal + c for v in variants for c in choices]
        else:
            variants = [v + literal + "{" + name + "}" for v in variants]
        pos = m.end()
    return [v + rule[pos:] for v in variants]


def _shape(template: str) -> str:
    return _TABLE_VAR.sub("{}", template)


def _methods(methods: Iterator[str] | tuple[str, ...]) -> list[str]:
    out = [m for m in methods if m != "OPTIONS"]
    return out + (["HEAD"] if "GET" in out and "HEAD" not in out else [])


def _gateway_own_endpoints() -> list[Endpoint]:
    """The gateway's own /v1 endpoints, read from the app it builds (no service is contacted)."""
    env = {"CRM_SERVICE_NAME": GATEWAY, "CRM_JWT_SECRET": "only-to-read-the-routes-long-enough-for-hs256",
           "CRM_LOG_FORMAT": "text", **{f"CRM_{s.upper()}_URL": "http://127.0.0.1:9" for s in SERVICES}}
    app = create_gateway_app(load_settings(GATEWAY, env))
    try:
        routes = [r for r in app.extensions["crm_routes"] if r.rule.startswith("/v1/") and not r.public]
    finally:
        state = app.extensions["crm_gateway"]
        state.executor.shutdown(wait=False)
        for upstream in state.upstreams.values():
            upstream.close()
    endpoints = []
    for route in routes:
        for template in _flask_rule_variants(route.rule):
            for method in _methods((route.method,)):
                endpoints.append(Endpoint(GATEWAY, method, template, _fill(template), route.permission))
    return endpoints


def _all_endpoints() -> list[Endpoint]:
    own = _gateway_own_endpoints()
    own_keys = {(e.method, _shape(e.pattern)) for e in own}
    forwarded = []
    for route in ROUTES:
        path = _fill(route.pattern)
        for method in _methods(route.methods):
            if (method, _shape(route.pattern)) in own_keys:
                continue  # the gateway answers it itself: its rule wins over forwarding
            forwarded.append(Endpoint(route.service, method, route.pattern, path, route.permission_for(method)))
    return own + forwarded


ENDPOINTS = _all_endpoints()


def _expected(permission: str | None, role: str | None) -> str:
    if role is None:
        return "401"
    if permission is not None and permission not in DEFAULT_ROLE_PERMISSIONS[role]:
        return "403"
    return "allowed"


def _cases() -> Iterator[Any]:
    for endpoint in ENDPOINTS:
        targets = [GATEWAY] if endpoint.owner == GATEWAY else [GATEWAY, endpoint.owner]
        for target in targets:
            for role in (None, *ROLES):
                via = "via-gateway" if target == GATEWAY else f"direct-{target}"
                yield pytest.param(target, endpoint, role,
                                   id=f"{via}-{endpoint.method}-{endpoint.pattern}-{role or 'no-token'}")


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def tokens(platform: Any) -> dict[str, dict[str, str]]:
    return {role: platform.auth((role,), user=f"authz-{role}", office="office-1") for role in ROLES}


def _call(http: requests.Session, base: str, endpoint: Endpoint, headers: dict[str, str]) -> requests.Response:
    kw: dict[str, Any] = {}
    if endpoint.upload:
        kw = {"files": {"file": ("note.txt", b"hello", "text/plain")}, "data": {"type": "note"}}
    elif endpoint.method in ("POST", "PATCH", "PUT"):
        kw = {"json": {}}
    return http.request(endpoint.method, base + endpoint.path, headers=headers, timeout=TIMEOUT,
                        allow_redirects=False, **kw)


@pytest.mark.parametrize(("target", "endpoint", "role"), list(_cases()))
def test_authorization_matrix(platform, http, tokens, target, endpoint, role):
    base = platform.gateway_url if target == GATEWAY else platform.api_url(target)
    headers = tokens[role] if role else {}
    r = _call(http, base, endpoint, headers)
    expected = _expected(endpoint.permission, role)
    what = (f"{endpoint.method} {endpoint.path} ({endpoint.pattern}, needs {endpoint.permission or 'any token'}) "
            f"to {target} as {role or 'nobody'}: {r.status_code} {r.text[:300]!r}")
    if expected == "401":
        assert r.status_code == 401, what
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), what
    elif expected == "403":
        assert r.status_code == 403, what
    else:
        assert r.status_code not in (401, 403), what
        assert r.status_code < 500, what
    if r.status_code >= 400 and endpoint.method != "HEAD":
        assert r.headers["Content-Type"] == "application/problem+json", what
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, f"{name} missing: {what}"


def test_the_matrix_covers_every_documented_operation(platform, http):
    """Every /v1 operation of the merged OpenAPI document is one of the matrix's endpoints."""
    doc = http.get(f"{platform.gateway_url}/openapi.json", timeout=TIMEOUT).json()
    covered = {(e.method, _shape(e.pattern)) for e in ENDPOINTS}
    documented = {(method.upper(), _shape(path)) for path, ops in doc["paths"].items() if path.startswith("/v1/")
                  for method in ops if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE")}
    # a documented {table} segment stands for the eight table names
    missing = {(m, p) for m, p in documented if (m, p) not in covered
               and (m, p.replace("-tables/{}", f"-tables/{TABLE}")) not in covered}
    assert documented and not missing, f"operations the matrix does not cover: {sorted(missing)}"


# -- cross-office -------------------------------------------------------------------------------

KIND_OF = {"leads": "lead", "opportunities": "opportunity"}
# A non-admin of another office with every permission on the records: leads belong to
# marketing, opportunities to account managers.
WORKER_OF = {"leads": "marketing", "opportunities": "account_manager"}


@pytest.mark.parametrize("plural", ["leads", "opportunities"])
def test_another_office_cannot_see_or_touch_a_record(platform, plural):
    kind = KIND_OF[plural]
    admin = Client(platform, user="authz-office1-admin", office="office-1")
    colleague = Client(platform, roles=(WORKER_OF[plural],), user="authz-office1-colleague", office="office-1")
    stranger = Client(platform, roles=(WORKER_OF[plural],), user="authz-office2-worker", office="office-2")
    tag = uuid.uuid4().hex[:10]
    record = create(colleague, plural, {"title": f"Office one {tag}", "description": f"secret {tag}"})
    assert record["office_id"] == "office-1"
    url = f"/v1/{plural}/{record['id']}"
    # the tabs live in the linking service, which learns of the record from its events: at once, through the gateway
    assert colleague("GET", f"{url}/timeline").status_code == 200
    other_stage = next(s for s in stranger("GET", f"/v1/{kind}-stages").json()["items"]
                       if s["id"] != record["stage"]["id"] and s["active"])
    group = admin("POST", f"/v1/{kind}-tables/groups", json={"names": {"en": f"G {tag}"}, "code": f"G{tag}"}).json()
    r = colleague("POST", f"{url}/groups", json={"group_id": group["id"]})
    assert r.status_code == 201, r.text
    before = admin("GET", url).json()

    reads = ["", "/stage-history", "/templates", "/attachments", "/contacts", "/job-orders", "/activities",
             "/placements", "/timeline"]
    for suffix in reads:
        r = stranger("GET", url + suffix)
        assert r.status_code == 404, f"GET {suffix or 'the record'}: {r.status_code} {r.text[:200]}"
        assert tag not in r.text
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("PATCH", "", {"json": {"title": "taken over"}}),
        ("PATCH", "", {"json": {"title": "taken over"}, "headers": {"If-Match": f'"{before["version"]}"'}}),
        ("DELETE", "", {}),
        ("POST", "/groups", {"json": {"group_id": group["id"]}}),
        ("DELETE", f"/groups/{group['id']}", {}),
        ("POST", "/copy", {"json": {}}),
        ("POST", "/print", {"json": {"template_id": str(uuid.uuid4())}}),
        ("POST", "/attachments", {"files": {"file": ("x.txt", b"x", "text/plain")}, "data": {"type": "note"}}),
        ("POST", "/job-orders", {"json": {"job_order": {"title": f"JO {tag}"}}}),
    ]
    if plural == "leads":
        writes.append(("POST", "/convert", {"json": {}}))
    for method, suffix, kw in writes:
        r = stranger(method, url + suffix, **kw)
        assert r.status_code == 404, f"{method} {suffix or 'the record'}: {r.status_code} {r.text[:200]}"

    # bulk: every action fails for the invisible record, item by item
    for action, extra in (("set_stage", {"stage_id": other_stage["id"]}), ("assign_owner", {"owner_id": "intruder"}),
                          ("remove_from_group", {"group_id": group["id"]}), ("delete", {})):
        r = stranger("POST", f"/v1/{plural}/bulk", json={"ids": [record["id"]], "action": action, **extra})
        assert r.status_code == 200, r.text
        [result] = r.json()["results"]
        assert result["id"] == record["id"] and result["status"] == "error", (action, result)
        assert tag not in (result["error"] or "")

    # lists and searches of the other office do not show it
    for params in ({"view": "all"}, {"q": tag}, {"view": "office"}):
        listed = stranger("GET", f"/v1/{plural}", params=params).json()["items"]
        assert record["id"] not in [x["id"] for x in listed], params

    # nothing the stranger tried happened (the platform's triggers may still act on it: not compared),
    # and the record is still there for its office and for any admin
    after = admin("GET", url).json()
    for field in ("title", "description", "owner_id", "office_id", "converted_opportunity_id"):
        assert after.get(field) == before.get(field), field
    assert group["id"] in after["group_ids"]
    assert after["stage"]["id"] != other_stage["id"] or before["stage"]["id"] == other_stage["id"]
    assert colleague("GET", url).status_code == 200
    far_admin = Client(platform, user="authz-office2-admin", office="office-2")
    assert far_admin("GET", url).status_code == 200
    assert record["id"] in [x["id"] for x in far_admin("GET", f"/v1/{plural}", params={"q": tag}).json()["items"]]
    assert far_admin("GET", f"{url}/timeline").status_code == 200

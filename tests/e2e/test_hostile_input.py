"""Hostile input on every POST and PATCH of the public API, through the gateway (issue 15).

Every write operation of the gateway's /openapi.json has a case here (a documented one without
a case fails ``test_every_write_operation_has_a_case``): a valid body for it, a text field of
that body, and the field whose blank value the contract refuses. Each payload of the corpus
replaces that text field (or the whole body) with something hostile - an unpaired surrogate,
a NUL or another control character, blank text, 5,000 nested arrays, 1e400, 10**400, NaN, a
value of the wrong type, a 10,000-element array - or adds an unknown field. Every one must get
a 4xx application/problem+json answer, never a 5xx, and must write nothing: a probe of what
the route would change (a list's size, the resource's version, a tab's items) reads the same
before and after.

The resources the cases need are made once per module, in a fresh tag; triggers this module
makes are inactive, and the probes wait until another test's triggers are done with the
records (they act asynchronously).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from werkzeug.http import parse_options_header

pytestmark = pytest.mark.e2e

TIMEOUT = 60
PROBLEM = "application/problem+json"
_HOSTILE = "__hostile_value__"
_VAR = re.compile(r"\{[^}]+\}")


# -- talking to the gateway ---------------------------------------------------------------------

class Api:
    """The gateway as one admin client: a session, so its consistency cookie covers every read."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers.update(headers)

    def __call__(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=TIMEOUT, allow_redirects=False, **kw)

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = self(method, path, json=body)
        assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text[:500]}"
        return dict(r.json())

    def count(self, path: str) -> int:
        """How many items a list has (every page)."""
        total, token = 0, None
        while True:
            params = {"page_size": "200", **({"page_token": token} if token else {})}
            r = self("GET", path, params=params)
            assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
            total += len(r.json()["items"])
            token = r.json()["next_page_token"]
            if not token:
                return total

    def version(self, path: str) -> Any:
        r = self("GET", path)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
        body = r.json()
        return body.get("version"), body.get("modified_at")

    def items(self, path: str) -> list[Any]:
        r = self("GET", path, params={"page_size": "200"})
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
        return sorted(json.dumps(i, sort_keys=True) for i in r.json()["items"])


# -- the cases ----------------------------------------------------------------------------------

@dataclass
class Case:
    """One write operation: where, a valid body, its text field, and what a write would change."""

    method: str
    pattern: str  # the documented path template
    path: str
    body: Any
    text: str  # dotted path of a text field in body
    blank: str | None  # dotted path of a text field whose blank value is refused (None: no such field)
    probe: Callable[[], Any]

    @property
    def id(self) -> str:
        return f"{self.method} {self.pattern}"


def _set(body: Any, dotted: str, value: Any) -> Any:
    out = json.loads(json.dumps(body))
    target = out
    *parents, last = dotted.split(".")
    for name in parents:
        target = target[name]
    target[last] = value
    return out


def _raw(body: Any, dotted: str, fragment: str) -> bytes:
    """``body`` as JSON text with the value at ``dotted`` replaced by the raw JSON ``fragment``."""
    text = json.dumps(_set(body, dotted, _HOSTILE))
    assert text.count(f'"{_HOSTILE}"') == 1
    return text.replace(f'"{_HOSTILE}"', fragment).encode()


def _text(value: str) -> Callable[[Case], bytes]:
    return lambda case: _raw(case.body, case.text, json.dumps(value))  # ensure_ascii: "\ud800" stays an escape


def _fragment(fragment: str) -> Callable[[Case], bytes]:
    return lambda case: _raw(case.body, case.text, fragment)


def _blank(case: Case) -> bytes | None:
    return None if case.blank is None else _raw(case.body, case.blank, '"   "')


def _unknown(case: Case) -> bytes:
    return json.dumps({**case.body, "zz_not_a_field": "x"}).encode()


CORPUS: dict[str, Callable[[Case], bytes | None]] = {
    "unpaired-high-surrogate": _text("a\ud800b"),
    "unpaired-low-surrogate": _text("\udfff"),
    "nul": _text("a\u0000b"),
    "escape-control": _text("a\u001b[31mb"),
    "c1-control": _text("a\u0085b"),
    "blank-required-text": _blank,
    "nested-5000": _fragment("[" * 5000 + "]" * 5000),
    "nested-objects-5000": _fragment('{"a":' * 5000 + "1" + "}" * 5000),
    "float-1e400": _fragment("1e400"),
    "int-10e400": _fragment(str(10**400)),
    "nan": _fragment("NaN"),
    "wrong-type-object": _fragment('{"x": 1}'),
    "wrong-type-number": _fragment("12345"),
    "wrong-type-bool": _fragment("true"),
    "array-10000": _fragment(json.dumps(["x"] * 10_000)),
    "unknown-field": _unknown,
    "body-array-10000": lambda case: json.dumps([0] * 10_000).encode(),
    "body-string": lambda case: b'"\\ud800"',
}


@dataclass
class World:
    """What the cases write to or refer to, made once."""

    api: Api
    tag: str
    ids: dict[str, str] = field(default_factory=dict)


def _settled(api: Api, paths: list[str], quiet: float = 1.5, limit: float = 20.0) -> None:
    """Wait until the resources at ``paths`` stop changing (other tests' triggers act on new records)."""
    deadline = time.monotonic() + limit
    last = [api.version(p) for p in paths]
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = [api.version(p) for p in paths]
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return


def _make_world(api: Api) -> World:
    w = World(api, uuid.uuid4().hex[:8])
    t, ids = w.tag, w.ids
    for kind in ("lead", "opportunity"):
        ids[f"{kind}_group"] = api.ok("POST", f"/v1/{kind}-tables/groups",
                                      {"names": {"en": f"HG {t}"}, "code": f"HG{t}"})["id"]
        ids[f"{kind}_role"] = api.ok("POST", f"/v1/{kind}-tables/roles",
                                     {"names": {"en": f"Tech {t}"}, "code": f"HT{t}"})["id"]
        ids[f"{kind}_source"] = api.ok("POST", f"/v1/{kind}-tables/sources",
                                       {"names": {"en": f"HS {t}"}, "code": f"HS{t}"})["id"]
        ids[f"{kind}_stage"] = api.ok("POST", f"/v1/{kind}-stages",
                                      {"names": {"en": f"H {t}"}, "code": f"H{t}"})["id"]
        default = next(s for s in api("GET", f"/v1/{kind}-stages", params={"page_size": "200"}).json()["items"]
                       if s["is_default"])
        ids[f"{kind}_template"] = api.ok("POST", "/v1/templates", {
            "kind": "print", "name": f"H {kind} {t}", "body": "{{ record.title }}",
            "visible_at": f"{kind}_stage", "stage_ids": [default["id"]]})["id"]
    ids["company"] = api.ok("POST", "/v1/companies", {"name": f"H {t}"})["id"]
    ids["contact"] = api.ok("POST", "/v1/contacts", {"first_name": "H", "last_name": t})["id"]
    ids["job_order"] = api.ok("POST", "/v1/job-orders", {"title": f"H {t}"})["id"]
    ids["placement"] = api.ok("POST", "/v1/placements", {"job_order_id": ids["job_order"],
                                                         "candidate_name": f"H {t}"})["id"]
    ids["activity"] = api.ok("POST", "/v1/activities", {"type": "note", "subject": f"H {t}"})["id"]
    ids["lead"] = api.ok("POST", "/v1/leads", {"title": f"H {t}"})["id"]
    ids["opportunity"] = api.ok("POST", "/v1/opportunities", {"title": f"H {t}"})["id"]
    for kind, records in (("lead", "leads"), ("opportunity", "opportunities")):
        api.ok("POST", f"/v1/{records}/{ids[kind]}/contacts", {"contact_id": ids["contact"],
                                                                "role_id": ids[f"{kind}_role"]})
    ids["trigger"] = api.ok("POST", "/v1/triggers", {
        "name": f"H {t}", "kind": "lead", "active": False, "event": {"type": "created"},
        "actions": [{"type": "add_to_group", "group_id": ids["lead_group"]}]})["id"]
    # Inactive, so nothing is sent (test platforms allow http to loopback; port 9 is discard).
    ids["webhook"] = api.ok("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/h", "event_types": ["lead.created"],
                                                     "active": False, "description": f"H {t}"})["id"]
    _settled(api, ["/v1/leads/" + ids["lead"], "/v1/opportunities/" + ids["opportunity"]])
    # Imports: a job still uploading (rows), one to map, and one checked by its service's worker (start).
    for collection, (columns, mapping) in IMPORTS.items():
        body = {"file_name": f"h-{t}.csv", "columns": columns, "rows": [[f"H {t} {c}" for c in columns]]}
        for step in ("rows", "mapping", "start"):
            ids[f"{collection}_import_{step}"] = api.ok("POST", f"/v1/{collection}/imports", body)["id"]
        start = f"/v1/{collection}/imports/{ids[f'{collection}_import_start']}"
        api.ok("PUT", f"{start}/mapping", {"mapping": mapping, "key_column": None})
        deadline = time.monotonic() + 60
        while api("GET", start).json()["status"] != "checked":  # waiting for the worker's check
            assert time.monotonic() < deadline, f"{start} was not checked within 60 s"
            time.sleep(0.2)
    return w


IMPORTS = {"leads": (["Title"], {"Title": "title"}), "opportunities": (["Title"], {"Title": "title"}),
           "companies": (["Name"], {"Name": "name"}), "contacts": (["First", "Last"], {"First": "first_name",
                                                                                       "Last": "last_name"})}


def _cases(w: World) -> list[Case]:
    api, t, ids = w.api, w.tag, w.ids
    n = iter(range(1_000_000))

    def count(path: str) -> Callable[[], Any]:
        return lambda: api.count(path)

    def version(path: str) -> Callable[[], Any]:
        return lambda: api.version(path)

    def items(path: str) -> Callable[[], Any]:
        return lambda: api.items(path)

    def both(*probes: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: [p() for p in probes]

    cases: list[Case] = []

    def add(method: str, pattern: str, path: str, body: Any, text: str, blank: str | None,
            probe: Callable[[], Any]) -> None:
        cases.append(Case(method, pattern, path, body, text, blank, probe))

    for kind in ("lead", "opportunity"):
        stages, tables = f"/v1/{kind}-stages", f"/v1/{kind}-tables"
        add("POST", stages, stages, {"names": {"en": "X"}, "code": f"X{t}{next(n)}"}, "names.en", "code",
            count(stages))
        add("PATCH", f"{stages}/{{id}}", f"{stages}/{ids[f'{kind}_stage']}", {"remarks": "x"}, "remarks", "code",
            version(f"{stages}/{ids[f'{kind}_stage']}"))
        add("POST", f"{tables}/{{table}}", f"{tables}/sources", {"names": {"en": "X"}, "code": f"X{t}{next(n)}"},
            "code", "names.en", count(f"{tables}/sources"))
        add("PATCH", f"{tables}/{{table}}/{{id}}", f"{tables}/sources/{ids[f'{kind}_source']}", {"code": f"Y{t}"},
            "code", "code", version(f"{tables}/sources/{ids[f'{kind}_source']}"))
    add("POST", "/v1/templates", "/v1/templates", {"kind": "email", "name": "X"}, "name", "name",
        count("/v1/templates"))
    template = f"/v1/templates/{ids['lead_template']}"
    add("PATCH", "/v1/templates/{id}", template, {"subject": None, "name": "Y"}, "name", "name", version(template))

    for kind, records in (("lead", "leads"), ("opportunity", "opportunities")):
        base = f"/v1/{records}"
        one = f"{base}/{ids[kind]}"
        add("POST", base, base, {"title": "X"}, "title", "title", count(base))
        add("POST", f"{base}/bulk", f"{base}/bulk", {"ids": [ids[kind]], "action": "assign_owner",
                                                      "owner_id": "someone-else"}, "owner_id", "owner_id",
            version(one))
        add("PATCH", f"{base}/{{id}}", one, {"title": "Y"}, "title", "title", version(one))
        add("POST", f"{base}/{{id}}/groups", f"{one}/groups", {"group_id": ids[f"{kind}_group"]}, "group_id",
            "group_id", version(one))
        add("POST", f"{base}/{{id}}/copy", f"{one}/copy", {"title": "Copy"}, "title", "title", count(base))
        add("POST", f"{base}/{{id}}/print", f"{one}/print", {"template_id": ids[f"{kind}_template"]}, "template_id",
            "template_id", version(one))
        add("POST", f"{base}/{{id}}/attachments", f"{one}/attachments", {"type": "note"}, "type", None,
            count(f"{one}/attachments"))
        add("POST", f"{base}/{{id}}/contacts", f"{one}/contacts", {"contact": {"first_name": "N", "last_name": "C"},
                                                                   "role_id": ids[f"{kind}_role"]},
            "contact.first_name", "contact.last_name", both(items(f"{one}/contacts"), count("/v1/contacts")))
        add("PATCH", f"{base}/{{id}}/contacts/{{contact_id}}", f"{one}/contacts/{ids['contact']}",
            {"role_id": ids[f"{kind}_role"]}, "role_id", "role_id", items(f"{one}/contacts"))
        add("POST", f"{base}/{{id}}/job-orders", f"{one}/job-orders", {"job_order": {"title": "New JO"}},
            "job_order.title", "job_order.title", both(items(f"{one}/job-orders"), count("/v1/job-orders")))
    lead = f"/v1/leads/{ids['lead']}"
    add("POST", "/v1/leads/{id}/convert", f"{lead}/convert", {"title": "Converted"}, "title", "title",
        both(version(lead), count("/v1/opportunities")))

    files = {
        "/v1/companies": ({"name": "X"}, "name", "name", {"city": "Y"}, "city", "name", "company"),
        "/v1/contacts": ({"first_name": "X", "last_name": "Y"}, "last_name", "first_name", {"phone": "1"},
                         "phone", "last_name", "contact"),
        "/v1/job-orders": ({"title": "X"}, "title", "title", {"description": "Y"}, "description", "title",
                           "job_order"),
        "/v1/placements": ({"job_order_id": ids["job_order"], "candidate_name": "X"}, "candidate_name",
                           "candidate_name", {"candidate_name": "Y"}, "candidate_name", "candidate_name", "placement"),
        "/v1/activities": ({"type": "note", "subject": "X"}, "subject", "subject", {"body": "Y"}, "body", "subject",
                           "activity"),
    }
    for base, (create, text, blank, patch, patch_text, patch_blank, key) in files.items():
        add("POST", base, base, create, text, blank, count(base))
        add("PATCH", f"{base}/{{id}}", f"{base}/{ids[key]}", patch, patch_text, patch_blank,
            version(f"{base}/{ids[key]}"))

    # Bulk create of files: hostile text in the call's own fields is refused whole (4xx); an item's own
    # problems are per-item results (tests/e2e/test_bulk_create_gateway.py).
    for base, item in (("/v1/companies", {"name": "X", "key": "k"}),
                       ("/v1/contacts", {"first_name": "X", "last_name": "Y", "key": "k"})):
        add("POST", f"{base}/bulk", f"{base}/bulk", {"action": "create", "items": [item]}, "action", "action",
            count(base))

    # Imports: the job's own fields are checked as any body; `start` takes no fields (an empty body or {}).
    for collection, (columns, mapping) in IMPORTS.items():
        base = f"/v1/{collection}/imports"
        add("POST", base, base, {"file_name": "x.csv", "columns": columns, "rows": [["x"] * len(columns)]},
            "file_name", "file_name", count(base))
        job = f"{base}/{ids[f'{collection}_import_rows']}"
        add("POST", f"{base}/{{id}}/rows", f"{job}/rows", {"rows": [["y"] * len(columns)]}, "rows", None,
            version(job))
        job = f"{base}/{ids[f'{collection}_import_mapping']}"
        add("PUT", f"{base}/{{id}}/mapping", f"{job}/mapping", {"mapping": mapping, "key_column": columns[0]},
            "key_column", "key_column", version(job))
        job = f"{base}/{ids[f'{collection}_import_start']}"
        add("POST", f"{base}/{{id}}/start", f"{job}/start", {}, "x", None, version(job))

    trigger = f"/v1/triggers/{ids['trigger']}"
    add("POST", "/v1/triggers", "/v1/triggers", {
        "name": "X", "kind": "lead", "active": False, "event": {"type": "created"},
        "actions": [{"type": "add_to_group", "group_id": ids["lead_group"]}]}, "name", "name", count("/v1/triggers"))
    add("PATCH", "/v1/triggers/{id}", trigger, {"name": "Y"}, "name", "name", version(trigger))
    add("POST", "/v1/triggers/{id}/dry-run", f"{trigger}/dry-run", {"record_id": ids["lead"]}, "record_id",
        "record_id", both(version(trigger), count(f"{trigger}/executions")))

    webhook = f"/v1/webhooks/{ids['webhook']}"
    add("POST", "/v1/webhooks", "/v1/webhooks", {"url": "http://127.0.0.1:9/x", "event_types": ["lead.created"],
                                                 "active": False, "description": "X"},
        "description", "url", count("/v1/webhooks"))
    add("PATCH", "/v1/webhooks/{id}", webhook, {"description": "Y"}, "description", None, version(webhook))
    add("POST", "/v1/webhooks/{id}/rotate-secret", f"{webhook}/rotate-secret", {}, "x", None, version(webhook))
    def backlog() -> Any:  # what a test or replay would queue (the webhook is inactive: nothing is sent)
        return api.ok("GET", webhook)["backlog"]
    add("POST", "/v1/webhooks/{id}/test", f"{webhook}/test", {}, "x", None, backlog)
    add("POST", "/v1/webhooks/{id}/replay", f"{webhook}/replay", {"since": "2026-01-01T00:00:00Z"}, "since", "since",
        backlog)

    add("POST", "/v1/leads/wizard", "/v1/leads/wizard",
        {"company": {"mode": "new", "data": {"name": "W"}}, "record": {"mode": "empty", "data": {"title": "W"}}},
        "record.data.title", "company.data.name", both(count("/v1/leads"), count("/v1/companies")))
    add("POST", "/v1/opportunities/wizard", "/v1/opportunities/wizard",
        {"company": {"mode": "existing", "id": ids["company"]}, "contact": {"mode": "existing", "id": ids["contact"]},
         "record": {"mode": "empty", "data": {"title": "W"}}},
        "record.data.title", "record.data.title", both(count("/v1/opportunities"), count("/v1/contacts")))
    return cases


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(platform) -> Iterator[World]:
    api = Api(platform.gateway_url, platform.auth(("admin",), user="hostile-admin", office="office-1"))
    made: World | None = None
    try:
        made = _make_world(api)
        yield made
    finally:
        if made is not None:  # its webhook would keep a queue (inactive ones keep collecting) for the session
            api("DELETE", f"/v1/webhooks/{made.ids['webhook']}")
        api.session.close()


def _shape(path: str) -> str:
    return _VAR.sub("{}", path)


def _documented_writes(api: Api) -> set[tuple[str, str]]:
    doc = api("GET", "/openapi.json").json()
    return {(method.upper(), _shape(path)) for path, operations in doc["paths"].items() if path.startswith("/v1/")
            for method in operations if method.upper() in ("POST", "PATCH", "PUT")}


def test_every_write_operation_has_a_case(world):
    documented = _documented_writes(world.api)
    covered = {(c.method, _shape(c.pattern)) for c in _cases(world)}
    assert documented, "the gateway documents no write operation"
    assert not documented - covered, f"write operations without a hostile-input case: {sorted(documented - covered)}"


def _check(api: Api, case: Case, name: str, payload: bytes) -> list[str]:
    """What is wrong with the answer to one hostile payload (nothing: refused properly, nothing written)."""
    before = case.probe()
    r = api(case.method, case.path, data=payload, headers={"Content-Type": "application/json"})
    what = f"{case.id} with {name}: {r.status_code} {r.headers.get('Content-Type')} {r.text[:300]!r}"
    failures = []
    if not 400 <= r.status_code < 500:
        failures.append(f"not a 4xx: {what}")
    elif r.headers.get("Content-Type") != PROBLEM:
        failures.append(f"not problem+json: {what}")
    elif r.json().get("status") != r.status_code:
        failures.append(f"the problem's status differs: {what}")
    after = case.probe()
    if after != before:
        failures.append(f"wrote something: {what}: {before!r} -> {after!r}")
    return failures


@pytest.mark.parametrize("payload", list(CORPUS))
def test_hostile_payloads_on_every_write_are_refused_and_write_nothing(world, payload):
    failures: list[str] = []
    checked = 0
    for case in _cases(world):
        raw = CORPUS[payload](case)
        if raw is not None:
            failures += _check(world.api, case, payload, raw)
            checked += 1
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    assert checked >= 40, f"only {checked} operations were tried"


def test_the_cases_bodies_are_valid_so_each_refusal_is_the_payloads(world):
    """Each case's own body is accepted (after the hostile runs: these do write)."""
    multipart = "/attachments"
    for case in _cases(world):
        r = world.api(case.method, case.path, json=case.body)
        if case.pattern.endswith(multipart):
            assert r.status_code == 415, f"{case.id}: {r.status_code} {r.text[:300]}"  # it takes multipart only
        else:
            assert 200 <= r.status_code < 300, f"{case.id} with its own body: {r.status_code} {r.text[:500]}"
        if case.pattern == "/v1/webhooks" and case.method == "POST":  # an inactive one would collect for the session
            world.api("DELETE", f"/v1/webhooks/{r.json()['id']}")


@pytest.mark.parametrize("file_name", ["Zürich – 東京 😀.csv", 'quote"semi;colon\\back.csv', ".csv"])
def test_an_imports_result_file_downloads_whatever_its_file_name(world, file_name):
    """A file name in any script, or with quotes, is valid text; its result file (whose name it
    gives) downloads with that name, RFC 8187-encoded, never a 500 (the fuzzer's find in CI)."""
    job = world.api.ok("POST", "/v1/contacts/imports",
                       {"file_name": file_name, "columns": ["First", "Last"], "rows": [["A", "B"]]})
    r = world.api("GET", f"/v1/contacts/imports/{job['id']}/result")
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    assert r.text.splitlines() == ["row,status,id,error", "2,pending,,"]
    disposition, params = parse_options_header(r.headers["Content-Disposition"])
    stem = file_name.rsplit(".", 1)[0] or "import"
    assert (disposition, params["filename"]) == ("attachment", f"{stem}-result.csv")

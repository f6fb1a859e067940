"""The route table: every path family of the API contract -> owning service and permission.

The table is derived from the services' declarations (``route_table.json``, ``make routes``);
``EXPECTED`` is the API contract's, written out, so a change of a service's declaration that
changes the contract shows here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crm_gateway.routes import (
    ROUTES,
    SEGMENT_CHOICES,
    GatewayRoute,
    MethodNotAllowedError,
    RouteNotFoundError,
    RouteTable,
    load_routes,
    route,
    template,
)
from crm_kit.settings import SERVICES

ANY = None  # any valid token
CATALOGUE_TABLES = ("attributes", "categories", "groups", "priorities", "procedures", "roles", "sources",
                    "stage-groups")

# (method, path, service, permission): one line per path family and method of API.md.
EXPECTED = [
    # catalogue: reads need any valid token, writes catalogue:admin
    *[row for kind in ("lead", "opportunity") for row in [
        ("GET", f"/v1/{kind}-stages", "catalogue", ANY),
        ("POST", f"/v1/{kind}-stages", "catalogue", "catalogue:admin"),
        ("GET", f"/v1/{kind}-stages/s1", "catalogue", ANY),
        ("PATCH", f"/v1/{kind}-stages/s1", "catalogue", "catalogue:admin"),
        ("DELETE", f"/v1/{kind}-stages/s1", "catalogue", "catalogue:admin"),
        *[r for table in CATALOGUE_TABLES for r in [
            ("GET", f"/v1/{kind}-tables/{table}", "catalogue", ANY),
            ("POST", f"/v1/{kind}-tables/{table}", "catalogue", "catalogue:admin"),
            ("GET", f"/v1/{kind}-tables/{table}/e1", "catalogue", ANY),
            ("PATCH", f"/v1/{kind}-tables/{table}/e1", "catalogue", "catalogue:admin"),
            ("DELETE", f"/v1/{kind}-tables/{table}/e1", "catalogue", "catalogue:admin"),
        ]],
    ]],
    ("GET", "/v1/templates", "catalogue", ANY),
    ("POST", "/v1/templates", "catalogue", "catalogue:admin"),
    ("GET", "/v1/templates/t1", "catalogue", ANY),
    ("PATCH", "/v1/templates/t1", "catalogue", "catalogue:admin"),
    ("DELETE", "/v1/templates/t1", "catalogue", "catalogue:admin"),
    # leads and opportunities, the same shape
    *[row for records in ("leads", "opportunities") for row in [
        ("POST", f"/v1/{records}", records, f"{records}:create"),
        ("GET", f"/v1/{records}", records, f"{records}:view"),
        ("GET", f"/v1/{records}/overview", records, f"{records}:view"),
        ("GET", f"/v1/{records}/r1", records, f"{records}:view"),
        ("HEAD", f"/v1/{records}/r1", records, f"{records}:view"),
        ("PATCH", f"/v1/{records}/r1", records, f"{records}:edit"),
        ("DELETE", f"/v1/{records}/r1", records, f"{records}:delete"),
        ("GET", f"/v1/{records}/r1/stage-history", records, f"{records}:view"),
        ("POST", f"/v1/{records}/r1/groups", records, f"{records}:edit"),
        ("DELETE", f"/v1/{records}/r1/groups/g1", records, f"{records}:edit"),
        ("POST", f"/v1/{records}/r1/copy", records, f"{records}:create"),
        ("POST", f"/v1/{records}/bulk", records, f"{records}:edit"),
        ("GET", f"/v1/{records}/r1/templates", records, f"{records}:view"),
        ("POST", f"/v1/{records}/r1/print", records, f"{records}:view"),
        ("POST", f"/v1/{records}/r1/attachments", records, f"{records}:edit"),
        ("GET", f"/v1/{records}/r1/attachments", records, f"{records}:view"),
        ("GET", f"/v1/{records}/r1/attachments/a1", records, f"{records}:view"),
        ("DELETE", f"/v1/{records}/r1/attachments/a1", records, f"{records}:edit"),
        ("GET", f"/v1/{records}/reports/stages", records, f"{records}:view"),
        # detail tabs and links: the linking service
        ("GET", f"/v1/{records}/r1/contacts", "linking", f"{records}:view"),
        ("POST", f"/v1/{records}/r1/contacts", "linking", f"{records}:edit"),
        ("PATCH", f"/v1/{records}/r1/contacts/c1", "linking", f"{records}:edit"),
        ("DELETE", f"/v1/{records}/r1/contacts/c1", "linking", f"{records}:edit"),
        ("GET", f"/v1/{records}/r1/job-orders", "linking", f"{records}:view"),
        ("POST", f"/v1/{records}/r1/job-orders", "linking", f"{records}:edit"),
        ("DELETE", f"/v1/{records}/r1/job-orders/j1", "linking", f"{records}:edit"),
        ("GET", f"/v1/{records}/r1/activities", "linking", f"{records}:view"),
        ("GET", f"/v1/{records}/r1/placements", "linking", f"{records}:view"),
        ("GET", f"/v1/{records}/r1/timeline", "linking", f"{records}:view"),
    ]],
    ("GET", "/v1/leads/reports/funnel", "leads", "leads:view"),
    ("POST", "/v1/leads/r1/convert", "leads", "leads:edit"),
    # files
    *[row for coll in ("companies", "contacts", "job-orders", "placements", "activities") for row in [
        ("POST", f"/v1/{coll}", "linking", "files:edit"),
        ("GET", f"/v1/{coll}", "linking", "files:view"),
        ("GET", f"/v1/{coll}/f1", "linking", "files:view"),
        ("PATCH", f"/v1/{coll}/f1", "linking", "files:edit"),
        ("DELETE", f"/v1/{coll}/f1", "linking", "files:edit"),
    ]],
    ("GET", "/v1/contacts/c1/leads", "linking", "leads:view"),
    ("GET", "/v1/contacts/c1/opportunities", "linking", "opportunities:view"),
    ("GET", "/v1/companies/c1/leads", "linking", "leads:view"),
    # triggers
    ("POST", "/v1/triggers", "triggers", "triggers:admin"),
    ("GET", "/v1/triggers", "triggers", "triggers:admin"),
    ("GET", "/v1/triggers/t1", "triggers", "triggers:admin"),
    ("PATCH", "/v1/triggers/t1", "triggers", "triggers:admin"),
    ("DELETE", "/v1/triggers/t1", "triggers", "triggers:admin"),
    ("GET", "/v1/triggers/t1/executions", "triggers", "triggers:admin"),
    ("POST", "/v1/triggers/t1/dry-run", "triggers", "triggers:admin"),
    ("GET", "/v1/trigger-executions", "triggers", "triggers:admin"),
]


@pytest.mark.parametrize(("method", "path", "service", "permission"), EXPECTED,
                         ids=[f"{m} {p}" for m, p, _, _ in EXPECTED])
def test_every_family_goes_to_its_service_with_its_permission(method, path, service, permission):
    match = ROUTES.resolve(method, path)
    assert (match.service, match.permission) == (service, permission)
    assert match.route.regex.fullmatch(path)


def test_fixed_words_are_not_taken_for_ids():
    assert ROUTES.resolve("GET", "/v1/leads/overview").template == "/v1/leads/overview"
    assert ROUTES.resolve("GET", "/v1/leads/3f1c").template == "/v1/leads/{id}"
    # bulk takes POST only: GET on it is 405, not a record called "bulk"
    with pytest.raises(MethodNotAllowedError) as exc:
        ROUTES.resolve("GET", "/v1/leads/bulk")
    assert exc.value.allowed == ("POST", "OPTIONS")


def test_lead_only_endpoints_do_not_exist_for_opportunities():
    for method, path in (("POST", "/v1/opportunities/r1/convert"), ("GET", "/v1/opportunities/reports/funnel")):
        with pytest.raises(RouteNotFoundError):
            ROUTES.resolve(method, path)


@pytest.mark.parametrize("path", [
    "/v1/nothing", "/v1/leads/r1/unknown", "/v1/lead-tables/colours", "/v1/lead-tables/colours/x",
    "/v1/customer-stages", "/v1/leads/", "/v1/leads/r1/contacts/c1/extra", "/v1/leads/..", "/v1/leads/.",
    "/v1/leads/../triggers", "/v1/me2",
])
def test_unknown_paths_have_no_route(path):
    with pytest.raises(RouteNotFoundError):
        ROUTES.resolve("GET", path)


def test_method_not_allowed_lists_the_methods_of_the_path():
    with pytest.raises(MethodNotAllowedError) as exc:
        ROUTES.resolve("PUT", "/v1/leads/r1")
    assert exc.value.allowed == ("GET", "HEAD", "PATCH", "DELETE", "OPTIONS")
    with pytest.raises(MethodNotAllowedError):
        ROUTES.resolve("POST", "/v1/leads/r1/timeline")


def test_options_and_head_follow_the_table():
    assert ROUTES.resolve("OPTIONS", "/v1/triggers").permission is None  # answered by the gateway
    assert ROUTES.resolve("HEAD", "/v1/companies").permission == "files:view"
    with pytest.raises(MethodNotAllowedError):
        ROUTES.resolve("HEAD", "/v1/leads/bulk")  # no GET, so no HEAD


def test_table_is_consistent():
    patterns = [r.pattern for r in ROUTES]
    assert len(patterns) == len(set(patterns)), "a pattern appears twice"
    for r in ROUTES:
        assert r.service in SERVICES
        for permission in r.permissions.values():
            assert permission is None or re.fullmatch(r"[a-z]+:[a-z]+", permission)
    # Every route is reachable: no earlier pattern swallows it.
    for r in ROUTES:
        sample = r.pattern
        for name, choices in r.choices.items():
            sample = sample.replace(f"{{{name}}}", choices[0])
        sample = re.sub(r"\{[a-z_]+\}", "x1", sample)
        assert ROUTES.route_for_path(sample)[0] is r, r.pattern


def test_closed_segment_sets_come_from_the_declarations():
    assert SEGMENT_CHOICES["table"] == CATALOGUE_TABLES
    assert ROUTES.resolve("GET", "/v1/lead-tables/stage-groups").template == "/v1/lead-tables/{table}"
    with pytest.raises(RouteNotFoundError):
        ROUTES.resolve("GET", "/v1/lead-tables/colours")


def test_uploads_come_from_the_declarations():
    assert {r.pattern: sorted(r.uploads) for r in ROUTES if r.uploads} == {
        "/v1/leads/{id}/attachments": ["POST"], "/v1/opportunities/{id}/attachments": ["POST"]}


def test_templates_name_the_first_id_as_the_contract_does():
    assert template("/v1/leads/{record_id}/groups/{group_id}", {}) == "/v1/leads/{id}/groups/{group_id}"
    assert template("/v1/lead-tables/{table}/{entry_id}", {"table": ("sources",)}) == "/v1/lead-tables/{table}/{id}"
    assert template("/v1/lead-tables/{table}", {"table": ("sources",)}) == "/v1/lead-tables/{table}"
    assert template("/v1/leads", {}) == "/v1/leads"


def test_the_order_puts_fixed_words_before_closed_sets_before_ids():
    data = {"routes": [  # as route_table.json lists them: by path
        {"path": "/v1/things/{thing_id}", "service": "leads", "permissions": {"GET": "leads:view"}},
        {"path": "/v1/things/{kind}", "service": "linking", "permissions": {"GET": "files:view"},
         "choices": {"kind": ["big", "small"]}},
        {"path": "/v1/things/special", "service": "catalogue", "permissions": {"GET": None}},
    ]}
    table = RouteTable(load_routes(data))
    assert [r.pattern for r in table] == ["/v1/things/special", "/v1/things/{kind}", "/v1/things/{id}"]
    assert table.resolve("GET", "/v1/things/special").service == "catalogue"
    assert table.resolve("GET", "/v1/things/big").service == "linking"
    assert table.resolve("GET", "/v1/things/other").service == "leads"


def test_first_matching_pattern_wins():
    table = RouteTable([route("/v1/things/special", "leads", GET="leads:view"),
                        route("/v1/things/{id}", "linking", GET="files:view")])
    assert table.resolve("GET", "/v1/things/special").service == "leads"
    assert table.resolve("GET", "/v1/things/other").service == "linking"


def test_bad_routes_are_refused():
    with pytest.raises(ValueError):
        GatewayRoute("/v2/x", "leads", {"GET": None})
    with pytest.raises(ValueError):
        GatewayRoute("/v1/x", "leads", {"FETCH": None})
    with pytest.raises(ValueError):
        RouteTable([route("/v1/x", "billing", GET=None)])


def test_templated_paths_find_their_owner():
    assert ROUTES.resolve_template("get", "/v1/leads/{lead_id}/contacts").service == "linking"
    assert ROUTES.resolve_template("patch", "/v1/leads/{lead_id}").service == "leads"
    assert ROUTES.resolve_template("get", "/v1/{kind}-tables/{table}/{id}").service == "catalogue"
    assert ROUTES.resolve_template("get", "/v1/lead-tables/sources").service == "catalogue"
    assert ROUTES.resolve_template("get", "/v1/internal/things") is None
    assert ROUTES.resolve_template("put", "/v1/leads/{id}") is None


def _api_md() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        for candidate in (parent / "shared" / "API.md", parent.parent / "shared" / "API.md"):
            if candidate.is_file():
                return candidate
    return None


def test_every_path_in_the_api_contract_has_a_route():
    """Drift check against shared/API.md (when it is beside the repository)."""
    api_md = _api_md()
    if api_md is None:
        pytest.skip("shared/API.md is not beside this checkout")
    text = api_md.read_text()
    paths = set(re.findall(r"(/v1/[A-Za-z0-9_{}\-/]+)", text))
    assert len(paths) > 20
    checked = 0
    for raw in sorted(paths):
        raw = raw.rstrip("/")
        for records in ("leads", "opportunities"):
            for kind in ("lead", "opportunity"):
                for table in CATALOGUE_TABLES:
                    concrete = raw.replace("{records}", records).replace("{kind}", kind).replace("{table}", table)
                    concrete = concrete.replace("{collection}", records)  # imports: leads, opportunities, ...
                    concrete = re.sub(r"\{[a-z_]+\}", "x1", concrete)
                    if concrete == "/v1/me":
                        continue  # the gateway's own endpoint, not forwarded
                    assert ROUTES.route_for_path(concrete) is not None, f"{raw} ({concrete}) has no route"
                    checked += 1
    for collection in ("companies", "contacts"):  # the imports' other collections
        for raw in sorted(p for p in paths if "{collection}" in p):
            concrete = re.sub(r"\{[a-z_]+\}", "x1", raw.rstrip("/").replace("{collection}", collection))
            assert ROUTES.route_for_path(concrete) is not None, f"{raw} ({concrete}) has no route"
    assert checked

"""The kit's OpenAPI generation: readable unique operationIds, ECMA-262 patterns, declared limits."""

from __future__ import annotations

import re

import pytest
from marshmallow import Schema, fields, validate

from crm_kit.web import Api
from crm_kit.web.fields import Timestamp
from crm_kit.web.openapi import build_spec, ecma_pattern, operation_id


@pytest.mark.parametrize(("method", "rule", "many", "expected"), [
    ("POST", "/v1/leads", False, "createLead"),
    ("GET", "/v1/leads", True, "listLeads"),
    ("GET", "/v1/opportunities/<record_id>", False, "getOpportunity"),
    ("PATCH", "/v1/opportunities/<record_id>", False, "updateOpportunity"),
    ("DELETE", "/v1/leads/<record_id>/contacts/<contact_id>", False, "deleteLeadContact"),
    ("POST", "/v1/leads/<record_id>/convert", False, "convertLead"),
    ("POST", "/v1/triggers/<trigger_id>/dry-run", False, "dryRunTrigger"),
    ("GET", "/v1/opportunities/<record_id>/job-orders", True, "listOpportunityJobOrders"),
    ("GET", "/v1/companies/<company_id>/leads", True, "listCompanyLeads"),
    ("GET", "/v1/lead-tables/<table>", True, "listLeadTableEntries"),
    ("POST", "/v1/lead-tables/<table>", False, "createLeadTableEntry"),
    ("GET", "/v1/lead-tables/<table>/<entry_id>", False, "getLeadTableEntry"),
    ("GET", "/v1/leads/reports/stages", False, "getLeadsReportsStages"),
])
def test_operation_ids_are_derived_from_method_and_path(method, rule, many, expected):
    assert operation_id(method, rule, many=many) == expected


def _document() -> dict:
    api = Api("things")

    class Thing(Schema):
        code = fields.String(validate=validate.Regexp(r"[A-Z]{1,5}\Z"))
        at = Timestamp()
        day = fields.Date()
        count = fields.Integer(validate=validate.Range(min=0, max=100))
        total = fields.Integer(validate=validate.Range(min=0, max=2**40))

    @api.get("/v1/things", response=Thing, many=True)
    def list_things(ctx):
        """List."""

    @api.get("/v1/other-things", response=Thing, many=True)
    def list_other(ctx):
        """List others."""

    @api.get("/v1/things/<thing_id>/other-things", response=Thing, many=True)
    def list_nested(ctx, thing_id):
        """Nested."""

    @api.patch("/v1/things/<thing_id>", body=Thing, response=Thing)
    def change(ctx, thing_id):
        """Change."""

    return build_spec("things", api.routes)


def test_operation_ids_are_unique_and_patterns_ecma():
    doc = _document()
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) and "listThings" in ids and "updateThing" in ids
    thing = doc["components"]["schemas"]["Thing"]["properties"]
    assert thing["code"]["pattern"] == "^(?:[A-Z]{1,5}$)"
    assert thing["at"]["maxLength"] == Timestamp.MAX_LENGTH and thing["day"]["maxLength"] == 10
    assert thing["count"]["format"] == "int32" and thing["total"]["format"] == "int64"


def test_ecma_pattern_means_what_re_match_meant():
    for python, text, matches in [(r"[a-z]+\Z", "abc", True), (r"[a-z]+\Z", "abc\n", False),
                                  (r"[a-z]+", "1abc", False), (r"^(?P<x>a)(?P=x)\Z", "aa", True)]:
        assert bool(re.match(python, text)) is matches
        translated = ecma_pattern(python)
        assert "\\Z" not in translated and "(?P" not in translated and translated.startswith("^")


def test_every_operation_documents_406_and_the_page_limits():
    doc = _document()
    listing = doc["paths"]["/v1/things"]["get"]
    assert "406" in listing["responses"]
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert page["items"]["maxItems"] == 200 and page["next_page_token"]["maxLength"] == 2000
    param = doc["paths"]["/v1/things/{thing_id}"]["patch"]["parameters"][0]
    assert param["schema"]["maxLength"] == 36

"""Lead conversion at the gateway (``crm_gateway.conversion``): 201 once the opportunity and what
was carried over are readable, with warnings for the contacts whose role did not come over,
and a token that covers the opportunities' and linking's effects (fake services on loopback)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask, Response, request
from gateway_helpers import SECRET, ServerThread, auth

from crm_gateway.consistency import TOKEN_HEADER, Token, token_key


def _contact(contact_id: str, role: dict[str, str] | None, first: str = "Anna") -> dict[str, Any]:
    return {"contact_id": contact_id, "role_id": role["id"] if role else None, "role": role,
            "contact": {"id": contact_id, "first_name": first, "last_name": contact_id.upper()}}


MAIN = {"id": "lr-main", "code": "MAIN", "name": "Main contact"}
CFO = {"id": "lr-cfo", "code": "CFO", "name": "CFO"}  # no opportunity role has this code
OPP_MAIN = {"id": "or-main", "code": "MAIN", "name": "Main contact"}


class Platform:
    """leads, opportunities and linking in one fake: each service's outbox on its own topic."""

    def __init__(self) -> None:
        self.lead_contacts = [_contact("c1", MAIN), _contact("c2", CFO), _contact("c3", None), _contact("c4", CFO)]
        self.opportunity_contacts = [_contact("c1", OPP_MAIN), _contact("c2", None), _contact("c3", None)]
        self.tab_status = 200
        self.asked: list[tuple[str, str, dict]] = []  # (host service, query, required offsets)
        self.tab_pages: list[str] = []
        app = Flask("platform")

        def required() -> dict:
            return json.loads(request.headers.get("Crm-Require-Offsets") or "{}")

        @app.get("/<service>/internal/consistency")
        def position(service: str) -> Response:
            self.asked.append((service, request.query_string.decode(), required()))
            outbox = {"leads": 5, "opportunities": 7, "linking": 9}[service]
            upto = int(request.args.get("upto", outbox))
            return Response(json.dumps({"outbox_id": upto, "positions": {f"crm.{service}.v1": {"0": upto}}}),
                            mimetype="application/json")

        @app.post("/leads/v1/leads/<lead_id>/convert")
        def convert(lead_id: str) -> Response:
            body = {"lead": {"id": lead_id, "converted_opportunity_id": "o1"}, "opportunity": {"id": "o1"},
                    "warnings": []}
            return Response(json.dumps(body), status=201, mimetype="application/json",
                            headers={"Crm-Written": "5", "Location": "/v1/opportunities/o1"})

        @app.get("/opportunities/v1/opportunities/<opportunity_id>")
        def opportunity(opportunity_id: str) -> Response:
            return Response(json.dumps({"id": opportunity_id, "lead_id": "l1"}), mimetype="application/json")

        @app.get("/linking/v1/<plural>/<record_id>/contacts")
        def contacts(plural: str, record_id: str) -> Response:
            if self.tab_status != 200:
                return Response('{"status": 403}', status=self.tab_status, mimetype="application/problem+json")
            self.tab_pages.append(f"{plural}:{request.args.get('page_token', '')}")
            items = self.lead_contacts if plural == "leads" else self.opportunity_contacts
            start = int(request.args.get("page_token") or 0)
            page = items[start:start + 2]  # two a page, whatever was asked: the gateway must follow the pages
            more = start + 2 < len(items)
            return Response(json.dumps({"items": page, "next_page_token": str(start + 2) if more else None}),
                            mimetype="application/json")

        self.server = ServerThread(app)

    def urls(self) -> dict[str, str]:
        return {name: f"{self.server.url}/{name}" for name in ("catalogue", "leads", "opportunities", "linking",
                                                              "triggers")}


@pytest.fixture
def platform():
    p = Platform()
    yield p
    p.server.close()


def test_the_answer_waits_for_what_came_over_and_warns_of_each_dropped_role(make_gateway, platform):
    gateway = make_gateway(platform.urls()).test_client()
    r = gateway.post("/v1/leads/l1/convert", json={}, headers=auth())
    assert r.status_code == 201, r.json
    assert r.headers["Location"] == "/v1/opportunities/o1"
    assert r.json["opportunity"] == {"id": "o1", "lead_id": "l1"}
    assert r.json["warnings"] == [
        {"code": "contact_role_dropped", "contact_id": "c2", "lead_role_id": "lr-cfo", "lead_role_code": "CFO",
         "message": "Contact Anna C2 came over with no role: their lead role CFO did not come over (no active "
                    "opportunity role has that code, or the opportunity has its CFO contact already)."},
        {"code": "contact_not_carried_over", "contact_id": "c4", "lead_role_id": "lr-cfo", "lead_role_code": "CFO",
         "message": "Contact Anna C4 is not on the opportunity."}]
    assert sorted(set(platform.tab_pages)) == ["leads:", "leads:2", "opportunities:", "opportunities:2"]
    # The opportunities service was asked once it had the conversion; linking once it had the
    # conversion and the opportunity (its tabs of the opportunity need it).
    opportunities = [a for a in platform.asked if a[0] == "opportunities"]
    linking = [a for a in platform.asked if a[0] == "linking"]
    assert opportunities[-1][2] == {"crm.leads.v1": {"0": 5}}
    assert linking[-1][2] == {"crm.leads.v1": {"0": 5}, "crm.opportunities.v1": {"0": 7}}
    token = Token.decode(r.headers[TOKEN_HEADER], token_key(SECRET))
    assert dict(token.positions) == {"leads": 5, "opportunities": 7, "linking": 9}


def test_a_caller_who_may_not_read_contacts_gets_no_warnings(make_gateway, platform):
    platform.tab_status = 403
    gateway = make_gateway(platform.urls()).test_client()
    r = gateway.post("/v1/leads/l1/convert", json={}, headers=auth())
    assert r.status_code == 201 and r.json["warnings"] == []

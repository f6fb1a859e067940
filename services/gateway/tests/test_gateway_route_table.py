"""The route table is derived from what the services declare (``make routes``), never copied.

* The committed ``route_table.json`` is what the installed services declare now.
* A route added to a service reaches the gateway with its permission, and nothing else is edited:
  the real leads service gets one more declared route, the derivation runs, and the gateway built
  on the result forwards that path to that service and checks that permission.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from gateway_helpers import SECRET, Echo, auth

from crm_gateway.routes import ROUTE_TABLE, ROUTES, RouteNotFoundError, RouteTable, load_routes
from crm_kit.service import find_service
from crm_kit.settings import SERVICES, load_settings
from crm_kit.web import Api, RequestContext
from crm_kit.web.openapi import PERMISSION_EXTENSION, build_spec

TOOL = Path(__file__).resolve().parents[3] / "tools" / "gateway-routes" / "gateway_routes.py"


def _tool() -> ModuleType:
    module = sys.modules.get("gateway_routes")
    if module is None:
        spec = importlib.util.spec_from_file_location("gateway_routes", TOOL)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["gateway_routes"] = module
        spec.loader.exec_module(module)
    return module


def test_the_committed_table_is_what_the_services_declare():
    tool = _tool()
    assert ROUTE_TABLE == tool.TABLE_FILE
    assert ROUTE_TABLE.read_text() == tool.current(), (
        "services/gateway/src/crm_gateway/route_table.json is stale: the services declare other routes "
        "or permissions now - run `make routes` and commit the file")


def test_every_operation_names_its_permission():
    api = Api("things")

    @api.get("/v1/things", permission="things:view")
    def list_things(ctx: RequestContext) -> Any:
        """Things."""

    @api.get("/v1/things/<thing_id>")
    def get_thing(ctx: RequestContext, thing_id: str) -> Any:
        """A thing: any valid token."""

    @api.get("/v1/open", public=True)
    def open_thing(ctx: RequestContext) -> Any:
        """No token at all."""

    paths = build_spec("things", api.routes)["paths"]
    assert paths["/v1/things"]["get"][PERMISSION_EXTENSION] == "things:view"
    assert paths["/v1/things/{thing_id}"]["get"][PERMISSION_EXTENSION] is None
    assert PERMISSION_EXTENSION not in paths["/v1/open"]["get"]  # takes no token: nothing to check


# -- a route added to a service --------------------------------------------------------------------

ROLES = json.dumps({"forecaster": ["leads:view", "leads:forecast"], "viewer": ["leads:view"]})
FORECAST = "/v1/leads/r1/forecast"


def _leads_with_one_more_route() -> Any:
    """The real leads service (from its entry point) with one more declared route."""
    env = {"CRM_SERVICE_NAME": "leads", "CRM_JWT_SECRET": SECRET, "CRM_DATABASE_URL": "sqlite://",
           "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_LOG_FORMAT": "text", "CRM_ROLE_PERMISSIONS": ROLES}
    app = find_service("leads").build_app(load_settings("domain", env))
    extra = Api("leads")

    @extra.get("/v1/leads/<record_id>/forecast", permission="leads:forecast")
    def forecast(ctx: RequestContext, record_id: str) -> dict[str, str]:
        """A lead's forecast."""
        return {"record_id": record_id, "forecast": "likely", "by": ctx.user.user_id}

    extra.register(app)
    return app


def test_a_route_added_to_a_service_reaches_the_gateway_with_its_permission(make_gateway, serve):
    tool = _tool()
    leads = _leads_with_one_more_route()
    documents, uploads = tool.service_declarations([s for s in SERVICES if s != "leads"])
    documents["leads"], uploads["leads"] = tool.document_of(leads), tool.uploads_of(leads)
    data = tool.derive(documents, uploads)

    # The derivation found the new route, and nothing else changed.
    committed = json.loads(ROUTE_TABLE.read_text())["routes"]
    assert [e for e in data["routes"] if e not in committed] == [
        {"path": "/v1/leads/{record_id}/forecast", "service": "leads", "permissions": {"GET": "leads:forecast"}}]
    assert len(data["routes"]) == len(committed) + 1
    table = RouteTable(load_routes(data))
    match = table.resolve("GET", FORECAST)
    assert (match.service, match.permission, match.template) == ("leads", "leads:forecast", "/v1/leads/{id}/forecast")
    with pytest.raises(RouteNotFoundError):
        ROUTES.resolve("GET", FORECAST)  # the committed table has no such route

    # The gateway built on the derived table forwards it to the leads service, after the permission.
    hits: list[str] = []
    wsgi = leads.wsgi_app

    def counted(environ: Any, start_response: Any) -> Any:
        hits.append(environ["PATH_INFO"])
        return wsgi(environ, start_response)

    leads.wsgi_app = counted
    upstream = serve(leads)
    others = Echo("catalogue")  # every other service (the gateway asks them where their outboxes stand)
    try:
        urls = {**dict.fromkeys(SERVICES, others.url), "leads": upstream.url}
        gateway = make_gateway(urls, routes=table, CRM_ROLE_PERMISSIONS=ROLES).test_client()
        assert make_gateway(urls, CRM_ROLE_PERMISSIONS=ROLES).test_client().get(
            FORECAST, headers=auth(["forecaster"])).status_code == 404  # the committed table's gateway

        assert gateway.get(FORECAST).status_code == 401
        refused = gateway.get(FORECAST, headers=auth(["viewer"]))
        assert refused.status_code == 403
        assert refused.json["detail"] == "This action needs the permission 'leads:forecast'."
        assert FORECAST not in hits  # refused by the gateway, before the service

        r = gateway.get(FORECAST, headers=auth(["forecaster"]))
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.json == {"record_id": "r1", "forecast": "likely", "by": "u-1"}
        assert hits.count(FORECAST) == 1
        assert gateway.put(FORECAST, headers=auth(["forecaster"])).headers["Allow"] == "GET, HEAD, OPTIONS"
    finally:
        others.close()


# -- what the derivation refuses -----------------------------------------------------------------

def _document(path: str, method: str = "get", **operation: Any) -> dict[str, Any]:
    return {"paths": {path: {method: {"security": [{"bearerAuth": []}], PERMISSION_EXTENSION: "leads:view",
                                      **operation}}}}


def _documents(**docs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {**{s: {"paths": {}} for s in SERVICES}, **docs}


def test_a_path_of_two_services_is_refused():
    tool = _tool()
    docs = _documents(leads=_document("/v1/things/{thing_id}"), linking=_document("/v1/things/{id}", "post"))
    with pytest.raises(tool.DerivationError, match="already"):
        tool.derive(docs)


def test_a_route_without_a_token_or_without_its_permission_is_refused():
    tool = _tool()
    with pytest.raises(tool.DerivationError, match="takes no token"):
        tool.derive(_documents(leads=_document("/v1/things", security=[])))
    undeclared = _document("/v1/things")
    del undeclared["paths"]["/v1/things"]["get"][PERMISSION_EXTENSION]
    with pytest.raises(tool.DerivationError, match="no x-permission"):
        tool.derive(_documents(leads=undeclared))
    with pytest.raises(tool.DerivationError, match="no document of"):
        tool.derive({"leads": _document("/v1/things")})


def test_operational_paths_stay_out():
    tool = _tool()
    data = tool.derive(_documents(leads={"paths": {**_document("/v1/things")["paths"],
                                                   "/healthz": {"get": {"security": []}},
                                                   "/internal/consistency": {"get": {"security": []}}}}))
    assert data["routes"] == [{"path": "/v1/things", "service": "leads", "permissions": {"GET": "leads:view"}}]

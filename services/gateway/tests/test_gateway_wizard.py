"""The wizard's orchestration against fake services on real sockets: validation, permissions
up front, compensation (and what it says when it cannot be done), idempotent replays, the
OpenAPI description. The real services are in tests/e2e/test_wizard_gateway.py."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, request
from gateway_helpers import PROBLEM, ServerThread, auth

from crm_gateway.openapi import merge_documents
from crm_gateway.routes import ROUTES, MethodNotAllowedError
from crm_gateway.wizard_client import DELETE_ATTEMPTS

MAIN_ROLE_ID = "role-main"


class FakeServices:
    """Catalogue, leads and linking in one app (their paths do not overlap), with switches."""

    def __init__(self) -> None:
        self.entities: dict[str, dict[str, Any]] = {}  # path -> entity
        self.keys: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}  # (principal, key) -> (request, body)
        self.calls: list[tuple[str, str, str | None]] = []  # method, path, Idempotency-Key
        self.fail: dict[tuple[str, str], int] = {}  # (method, path prefix) -> status to answer
        self.slow: dict[tuple[str, str], float] = {}  # (method, path) -> seconds before answering
        self.outbox = 0  # ids of the "outbox rows" the creates wrote (Crm-Written), as a real service says
        self.link_offsets: list[Any] = []  # the Kafka offsets each link call asked linking to wait for
        self.lock = threading.Lock()
        self.app = self._app()

    def _app(self) -> Flask:
        app = Flask("fake-services")

        def problem(status: int, detail: str, **extra: Any) -> Response:
            body = {"type": "about:blank", "title": "x", "status": status, "detail": detail, **extra}
            return Response(json.dumps(body), status=status, mimetype=PROBLEM)

        def create(collection: str | None) -> Response:
            """A new entity (a link when ``collection`` is None), remembered under its Idempotency-Key."""
            key = request.headers.get("Idempotency-Key")
            principal = request.headers["Authorization"]  # the same token stands for the same caller
            fingerprint = f"{request.method} {request.path} {json.dumps(request.json, sort_keys=True)}"
            with self.lock:
                if key and (principal, key) in self.keys:
                    stored, entity = self.keys[(principal, key)]
                    if stored != fingerprint:
                        return problem(422, "Key reused.", errors=[{"field": "Idempotency-Key", "message": "x"}])
                    return Response(json.dumps(entity), status=201, mimetype="application/json",
                                    headers={"Idempotent-Replayed": "true"})
                entity = {"id": str(uuid.uuid4()), **request.json}
                self.outbox += 1
                written = self.outbox
                if collection is not None:
                    self.entities[f"{collection}/{entity['id']}"] = entity
                if key:
                    self.keys[(principal, key)] = (fingerprint, entity)
            return Response(json.dumps(entity), status=201, mimetype="application/json",
                            headers={"Crm-Written": str(written)})

        @app.get("/internal/consistency")
        def consistency() -> Any:
            # Row n of the outbox is at offset n of the one partition (what a relay would report).
            upto = int(request.args.get("upto", self.outbox))
            return {"outbox_id": upto, "positions": {"crm.leads.v1": {"0": upto}}}

        @app.before_request
        def _record() -> Response | None:
            self.calls.append((request.method, request.path, request.headers.get("Idempotency-Key")))
            time.sleep(self.slow.get((request.method, request.path), 0))
            for (method, prefix), status in self.fail.items():
                if request.method == method and request.path.startswith(prefix):
                    return problem(status, f"{prefix} refused", errors=[{"field": "title", "message": "Bad."}])
            return None

        @app.get("/v1/lead-tables/roles")
        def roles() -> Any:
            return {"items": [{"id": "role-sign", "code": "SIGN"}, {"id": MAIN_ROLE_ID, "code": "MAIN"}],
                    "next_page_token": None}

        @app.post("/v1/companies")
        def companies() -> Response:
            return create("/v1/companies")

        @app.post("/v1/contacts")
        def contacts() -> Response:
            return create("/v1/contacts")

        @app.post("/v1/leads")
        def leads() -> Response:
            return create("/v1/leads")

        @app.post("/v1/leads/<record_id>/contacts")
        def link(record_id: str) -> Response:
            # Linking knows the record only once it was asked to wait for the record's event.
            offsets = json.loads(request.headers.get("Crm-Require-Offsets") or "{}")
            self.link_offsets.append(offsets)
            if offsets.get("crm.leads.v1", {}).get("0", 0) < self.outbox:
                return problem(404, "No such lead.")
            return create(None)

        @app.route("/v1/<any(companies, contacts, leads):collection>/<entity_id>", methods=["GET", "DELETE"])
        def item(collection: str, entity_id: str) -> Response:
            path = f"/v1/{collection}/{entity_id}"
            with self.lock:
                entity = self.entities.get(path)
                if entity is None:
                    return problem(404, "Not found.")
                if request.method == "DELETE":
                    del self.entities[path]
                    return Response(status=204)
            return Response(json.dumps(entity), mimetype="application/json")

        return app

    def posts(self) -> list[str]:
        return [path for method, path, _ in self.calls if method == "POST"]

    def deletes(self) -> list[str]:
        return [path.split("/")[2] for method, path, _ in self.calls if method == "DELETE"]


@pytest.fixture
def services() -> Iterator[FakeServices]:
    fake = FakeServices()
    server = ServerThread(fake.app)
    fake.url = server.url  # type: ignore[attr-defined]
    yield fake
    server.close()


@pytest.fixture
def gateway(make_gateway, services) -> Any:
    return make_gateway(services.url, CRM_ROLE_PERMISSIONS=json.dumps({
        "admin": ["leads:create", "leads:edit", "leads:delete", "files:view", "files:edit"],
        "creator": ["leads:create", "files:view"],
    })).test_client()


def body(**over: Any) -> dict[str, Any]:
    return {"company": {"mode": "new", "data": {"name": "Acme"}},
            "contact": {"mode": "new", "data": {"first_name": "Anna", "last_name": "Smit"}},
            "record": {"mode": "empty", "data": {"title": "Welders"}}, **over}


@pytest.mark.parametrize(("bad", "field"), [
    ({"colour": "red"}, "colour"),
    ({"company": {"mode": "existing"}}, "company.id"),
    ({"company": {"mode": "new"}}, "company.data"),
    ({"company": {"mode": "new", "data": "Acme"}}, "company.data"),
    ({"company": {"mode": "none", "id": "c1"}}, "company.id"),
    ({"company": {"mode": "maybe"}}, "company.mode"),
    ({"company": {"mode": "none"}}, "contact.mode"),  # none skips the contact: a new one is a contradiction
    ({"contact": {"mode": "new", "data": {}, "extra": 1}}, "contact.extra"),
    ({"record": {"mode": "copy", "data": {}}}, "record.copy_from"),
    ({"record": {"mode": "empty"}}, "record.data"),
    ({"record": {"mode": "empty", "copy_from": "r1", "data": {}}}, "record.copy_from"),
    ({"record": {"mode": "empty", "data": {"title": "x", "company_id": "c9"}}}, "record.data.company_id"),
    ({"record": {"mode": "copy", "copy_from": "../companies"}}, "record.copy_from"),  # never another path
    ({"company": {"mode": "existing", "id": "c1/leads"}}, "company.id"),
])
def test_invalid_bodies_are_422_and_reach_no_service(gateway, services, bad, field):
    r = gateway.post("/v1/leads/wizard", json=body(**bad), headers=auth())
    assert r.status_code == 422 and r.content_type == PROBLEM
    assert field in [e["field"] for e in r.json["errors"]], r.json
    assert services.calls == []


def test_opportunities_refuse_none(gateway, services, make_gateway):
    app = make_gateway(services.url).test_client()  # the default roles: admin may create opportunities
    for over in ({"company": {"mode": "none"}, "contact": {"mode": "none"}}, {"contact": {"mode": "none"}}, {
            "contact": None}):
        r = app.post("/v1/opportunities/wizard", json=body(**over), headers=auth())
        assert r.status_code == 422, r.json
    assert services.calls == []


def test_every_permission_is_checked_before_anything_is_created(gateway, services):
    r = gateway.post("/v1/leads/wizard", json=body(), headers=auth(["creator"]))
    assert r.status_code == 403 and r.content_type == PROBLEM
    assert r.json["missing_permissions"] == ["files:edit", "leads:edit", "leads:delete"]
    assert services.calls == []
    only_record = body(company={"mode": "none"}, contact={"mode": "none"})
    assert gateway.post("/v1/leads/wizard", json=only_record, headers=auth(["creator"])).status_code == 201


def test_success_waits_for_linking_and_links_the_main_contact(gateway, services):
    r = gateway.post("/v1/leads/wizard", json=body(), headers=auth())
    assert r.status_code == 201, r.json
    lead, company, contact = r.json["lead"], r.json["company"], r.json["contact"]
    assert (lead["company_id"], lead["contact_id"], contact["company_id"]) == (company["id"], contact["id"],
                                                                                company["id"])
    assert r.headers["Location"] == f"/v1/leads/{lead['id']}"
    link = f"/v1/leads/{lead['id']}/contacts"
    assert services.posts() == ["/v1/companies", "/v1/contacts", "/v1/leads", link]
    # The link carried the record step's token: linking was asked to wait for the lead's event.
    assert services.link_offsets == [{"crm.leads.v1": {"0": 3}}]
    assert r.headers["Consistency-Token"] and "crm_ct=" in r.headers["Set-Cookie"]
    assert services.deletes() == []


def test_a_failing_step_undoes_what_this_call_created(gateway, services):
    services.fail[("POST", "/v1/leads/")] = 409  # the link step
    r = gateway.post("/v1/leads/wizard", json=body(), headers=auth())
    assert r.status_code == 409 and r.content_type == PROBLEM
    assert r.json["step"] == "link" and r.json["detail"] == "/v1/leads/ refused"
    assert r.json["instance"] == "/v1/leads/wizard" and "not_undone" not in r.json
    assert services.deletes() == ["leads", "contacts", "companies"]
    assert services.entities == {}


def test_existing_entities_are_never_deleted(gateway, services):
    company = {"id": "c-1", "name": "Known"}
    services.entities["/v1/companies/c-1"] = company
    services.fail[("POST", "/v1/leads")] = 422
    r = gateway.post("/v1/leads/wizard", json=body(company={"mode": "existing", "id": "c-1"}), headers=auth())
    assert r.status_code == 422 and r.json["step"] == "record" and r.json["errors"] == [
        {"field": "title", "message": "Bad."}]
    assert services.deletes() == ["contacts"]
    assert services.entities == {"/v1/companies/c-1": company}
    before = len(services.posts())
    r = gateway.post("/v1/leads/wizard", json=body(company={"mode": "existing", "id": "c-2"}), headers=auth())
    assert r.status_code == 404 and r.json["step"] == "company"
    assert len(services.posts()) == before  # read first: nothing was created for an unknown company


def test_an_undo_that_fails_is_retried_logged_and_reported(gateway, services, caplog):
    services.fail[("POST", "/v1/leads")] = 422
    services.fail[("DELETE", "/v1/companies/")] = 503
    with caplog.at_level(logging.ERROR, logger="crm_gateway.wizard"):
        r = gateway.post("/v1/leads/wizard", json=body(), headers=auth())
    assert r.status_code == 422 and r.json["step"] == "record"
    company_id = next(path for path in services.entities if path.startswith("/v1/companies/")).split("/")[-1]
    assert r.json["not_undone"] == [{"step": "company", "id": company_id}]
    assert f"company {company_id} could not be deleted" in r.json["detail"]
    assert services.deletes() == ["contacts"] + ["companies"] * DELETE_ATTEMPTS
    assert company_id in caplog.text
    assert "127.0.0.1" not in r.get_data(as_text=True)


def test_a_step_that_times_out_is_a_504_that_says_what_may_remain(make_gateway, services):
    gateway = make_gateway(services.url, CRM_UPSTREAM_TIMEOUT="0.5").test_client()
    services.slow[("POST", "/v1/leads")] = 2
    r = gateway.post("/v1/leads/wizard", json=body(), headers=auth())
    assert r.status_code == 504 and r.json["step"] == "record"
    assert "may have been created all the same" in r.json["detail"]
    assert services.deletes() == ["contacts", "companies"]


def test_same_key_replays_without_creating_and_a_failed_attempt_is_retried_afresh(gateway, services):
    headers = {**auth(), "Idempotency-Key": "k-1"}  # one token: the services remember keys per caller
    services.fail[("POST", "/v1/leads")] = 422
    assert gateway.post("/v1/leads/wizard", json=body(), headers=headers).status_code == 422
    assert services.entities == {}
    del services.fail[("POST", "/v1/leads")]
    first = gateway.post("/v1/leads/wizard", json=body(), headers=headers)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    keys = [k for method, _, k in services.calls if method == "POST" and k]
    assert keys[0].endswith(":0:company") and keys[-1].endswith(":1:link")  # the undone generation 0 is skipped
    assert "k-1" not in "".join(keys)
    created = dict(services.entities)
    again = gateway.post("/v1/leads/wizard", json=body(), headers=headers)
    assert again.status_code == 201 and again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert services.entities == created
    other = gateway.post("/v1/leads/wizard", json=body(record={"mode": "empty", "data": {"title": "Other"}}),
                         headers=headers)
    assert other.status_code == 422 and other.json["step"] == "record"
    assert services.entities == created  # the replayed company and contact stay
    bad_key = gateway.post("/v1/leads/wizard", json=body(), headers={**headers, "Idempotency-Key": "é"})
    assert bad_key.status_code == 422 and bad_key.json["errors"][0]["field"] == "Idempotency-Key"


def test_the_gateway_serves_the_wizard_and_documents_it(gateway):
    with pytest.raises(MethodNotAllowedError):  # no service is routed POST .../wizard
        ROUTES.resolve("POST", "/v1/leads/wizard")
    own = gateway.application.extensions["crm_gateway"].documents._own()
    doc = merge_documents(own, {})
    for records, kind in (("leads", "lead"), ("opportunities", "opportunity")):
        operation = doc["paths"][f"/v1/{records}/wizard"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        assert set(doc["components"]["schemas"][schema]["properties"]) == {"company", "contact", "record"}
        assert operation["requestBody"]["content"]["application/json"]["examples"]
        created = operation["responses"]["201"]["content"]["application/json"]
        assert kind in created["examples"][kind]["value"]
        assert {"403", "404", "409", "422", "503"} <= set(operation["responses"])
        assert "Idempotency-Key" in [p["name"] for p in operation["parameters"]]


def test_other_methods_on_the_wizard_are_405_not_a_record_called_wizard(gateway, services):
    for method in ("GET", "PATCH", "DELETE"):
        r = gateway.open("/v1/leads/wizard", method=method, headers=auth())
        assert r.status_code == 405 and r.content_type == PROBLEM, (method, r.status_code)
        assert r.headers["Allow"] == "POST, OPTIONS"
    r = gateway.options("/v1/opportunities/wizard")
    assert r.status_code == 204 and r.headers["Allow"] == "POST, OPTIONS"

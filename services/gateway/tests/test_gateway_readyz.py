"""/healthz and /readyz: the gateway is ready only when every service is."""

from __future__ import annotations

import time

import pytest
from gateway_helpers import Echo

from crm_kit.settings import SERVICES


@pytest.fixture
def services():
    servers = {name: Echo(name) for name in SERVICES}
    yield servers
    for server in servers.values():
        server.close()


def test_healthz_checks_nothing_external(make_gateway, closed_port):
    r = make_gateway(closed_port.url).test_client().get("/healthz")
    assert r.status_code == 200 and r.json == {"status": "ok", "service": "gateway"}


def test_ready_when_every_service_is(make_gateway, services):
    c = make_gateway({name: s.url for name, s in services.items()}).test_client()
    r = c.get("/readyz")
    assert r.status_code == 200, r.json
    assert r.json["status"] == "ready"
    assert r.json["checks"] == dict.fromkeys(SERVICES, "ok")
    assert all(s.state.count() == 0 for s in services.values())  # /readyz is not an echo hit


def test_not_ready_lists_each_service_state(make_gateway, services, closed_port):
    services["opportunities"].state.ready_status = 503
    urls = {name: s.url for name, s in services.items()}
    urls["linking"] = closed_port.url
    r = make_gateway(urls).test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json["status"] == "not ready"
    checks = r.json["checks"]
    assert checks["catalogue"] == checks["leads"] == checks["triggers"] == "ok"
    assert checks["opportunities"] == "unavailable: NotReadyError"
    assert checks["linking"] == "unavailable: ConnectionFailedError"
    assert str(closed_port.port) not in r.get_data(as_text=True)


def test_services_are_asked_concurrently_with_a_short_timeout(make_gateway, services):
    for server in services.values():
        server.state.ready_sleep = 4  # every service hangs
    c = make_gateway({name: s.url for name, s in services.items()}).test_client()
    started = time.monotonic()
    r = c.get("/readyz")
    elapsed = time.monotonic() - started
    assert r.status_code == 503
    assert set(r.json["checks"].values()) == {"unavailable: ReadyzTimeoutError"}
    assert elapsed < 7  # five services, one 2 s timeout - not five of them (10 s)


def test_readiness_recovers(make_gateway, services):
    services["catalogue"].state.ready_status = 500
    c = make_gateway({name: s.url for name, s in services.items()}).test_client()
    assert c.get("/readyz").status_code == 503
    services["catalogue"].state.ready_status = 200
    assert c.get("/readyz").status_code == 200


def test_all_down_is_not_ready(make_gateway, closed_port):
    r = make_gateway(closed_port.url).test_client().get("/readyz")
    assert r.status_code == 503
    assert set(r.json["checks"]) == set(SERVICES)

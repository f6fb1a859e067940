"""End to end: real processes (gunicorn apis, workers, gateway), PostgreSQL and Kafka.

A client's request goes through the gateway to a service, the service's event goes
through its outbox and Kafka to another service's read model; without a valid token the
gateway and the services themselves refuse.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def test_ready_and_me(platform):
    r = requests.get(f"{platform.gateway_url}/readyz", timeout=10)
    assert r.status_code == 200, r.text
    me = requests.get(f"{platform.gateway_url}/v1/me", headers=platform.auth(("marketing",), user="ann",
                                                                             office="office-7"), timeout=10)
    assert me.status_code == 200
    body = me.json()
    assert (body["id"], body["office_id"], body["roles"]) == ("ann", "office-7", ["marketing"])
    assert "leads:create" in body["permissions"] and "opportunities:create" not in body["permissions"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer forged.token.value"}])
def test_without_a_valid_token_gateway_and_services_answer_401(platform, headers):
    for url in (f"{platform.gateway_url}/v1/leads", f"{platform.gateway_url}/v1/me",
                f"{platform.api_url('leads')}/v1/leads", f"{platform.api_url('catalogue')}/v1/lead-stages",
                f"{platform.api_url('triggers')}/v1/triggers"):
        r = requests.get(url, headers=headers, timeout=10)
        assert r.status_code == 401, url
        assert r.headers["Content-Type"].startswith(PROBLEM), url
        assert r.json()["status"] == 401


def test_a_token_signed_with_another_secret_is_refused_by_the_service_itself(platform):
    from crm_kit.web import issue_token

    forged = issue_token("not-the-platform-secret-but-long-enough", user_id="x", name="x", office_id="o",
                         roles=["admin"])
    r = requests.get(f"{platform.api_url('leads')}/v1/leads", headers={"Authorization": f"Bearer {forged}"},
                     timeout=10)
    assert r.status_code == 401


def test_missing_permission_is_403_at_the_gateway(platform):
    r = requests.post(f"{platform.gateway_url}/v1/leads", json={"title": "x"}, headers=platform.auth(("viewer",)),
                      timeout=10)
    assert r.status_code == 403 and r.headers["Content-Type"].startswith(PROBLEM)


def test_a_lead_created_through_the_gateway_reaches_linking_through_kafka(platform):
    h = platform.auth(("marketing",))
    key = uuid.uuid4().hex
    correlation_id = "e2e-" + key
    r = requests.post(f"{platform.gateway_url}/v1/leads", json={"title": "E2E lead"},
                      headers={**h, "Idempotency-Key": key, "X-Correlation-ID": correlation_id}, timeout=10)
    assert r.status_code == 201, r.text
    assert r.headers["X-Correlation-ID"] == correlation_id
    lead = r.json()
    assert lead["created_at"].endswith("Z")
    assert r.headers["ETag"] == '"1"'
    again = requests.post(f"{platform.gateway_url}/v1/leads", json={"title": "E2E lead"},
                          headers={**h, "Idempotency-Key": key}, timeout=10)
    assert again.status_code == 201 and again.json() == lead
    assert again.headers.get("Idempotent-Replayed") == "true"
    got = requests.get(f"{platform.gateway_url}{r.headers['Location']}", headers=h, timeout=10)
    assert got.status_code == 200 and got.json()["title"] == "E2E lead"

    # lead.created -> outbox -> relay -> Kafka -> linking's consumer -> its read model, read from linking's
    # database directly (not through the gateway): the event arrives asynchronously.
    engine = create_engine(platform.db_urls["linking"])
    deadline = time.monotonic() + 30
    row = None
    while time.monotonic() < deadline and row is None:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT title, version FROM record_views WHERE id = :id"),
                               {"id": lead["id"]}).first()
        time.sleep(0.1)
    engine.dispose()
    assert row is not None, "the lead's event never reached the linking service"
    assert tuple(row) == ("E2E lead", 1)

    # The request's correlation id travelled into the event (and its Kafka headers).
    engine = create_engine(platform.db_urls["leads"])
    with engine.connect() as conn:
        payload = conn.execute(text("SELECT payload FROM outbox WHERE key = :id ORDER BY id"),
                               {"id": lead["id"]}).scalars().first()
    engine.dispose()
    from crm_events.envelope import decode

    assert decode(payload).correlation_id == correlation_id


def test_gateway_metrics_and_openapi(platform):
    requests.get(f"{platform.gateway_url}/v1/me", headers=platform.auth(), timeout=10)
    metrics = requests.get(f"{platform.gateway_url}/metrics", timeout=10).text
    assert "crm_http_requests_total" in metrics
    doc = requests.get(f"{platform.gateway_url}/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/v1/me", "/v1/leads", "/v1/leads/{record_id}", "/v1/opportunities", "/v1/lead-stages",
                 "/v1/triggers"):
        assert path in doc["paths"], path

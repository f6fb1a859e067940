"""The catalogue end to end: through the gateway, on real processes, PostgreSQL and Kafka.

The platform is shared by the whole session, so every entity made here has a unique code and
assertions about the starter data look only at the seeded codes.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer
from sqlalchemy import create_engine, text

from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_events.envelope import decode, encode, headers_for, new_envelope

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"
SEEDED_LEAD_STAGES = {"NEW": "Nieuw", "CONTACTED": "Gecontacteerd", "QUALIFIED": "Gekwalificeerd",
                      "CONVERTED": "Geconverteerd", "DISQUALIFIED": "Gediskwalificeerd"}


def call(platform, method: str, path: str, expect: int, roles=("admin",), **kw) -> requests.Response:
    headers = {**platform.auth(roles), **kw.pop("headers", {})}
    r = requests.request(method, f"{platform.gateway_url}{path}", headers=headers, timeout=10, **kw)
    assert r.status_code == expect, (method, path, r.status_code, r.text)
    if expect >= 400:
        assert r.headers["Content-Type"].startswith(PROBLEM)
    return r


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


def test_the_seeded_lead_stages_in_order_in_dutch(platform):
    r = call(platform, "GET", "/v1/lead-stages?page_size=200", 200, roles=("viewer",),
             headers={"Accept-Language": "nl"})
    seeded = [(s["code"], s["name"]) for s in r.json()["items"] if s["code"] in SEEDED_LEAD_STAGES]
    assert seeded == list(SEEDED_LEAD_STAGES.items())


def test_create_patch_delete_a_stage_a_table_entry_and_a_template(platform):
    code = unique("E2E")
    group = call(platform, "POST", "/v1/lead-tables/stage-groups", 201,
                 json={"names": {"en": "E2E group", "nl": "E2E groep"}, "code": code}).json()
    stage = call(platform, "POST", "/v1/lead-stages", 201,
                 json={"names": {"en": "Waiting", "nl": "Wachten"}, "code": code, "color": "#123456",
                       "stage_group_id": group["id"]}).json()
    template = call(platform, "POST", "/v1/templates", 201,
                    json={"kind": "email", "name": f"Mail {code}", "subject": "Hi", "body": "{{ lead.title }}",
                          "visible_at": "lead_stage", "stage_ids": [stage["id"]]}).json()

    r = call(platform, "GET", f"/v1/lead-stages/{stage['id']}", 200, headers={"Accept-Language": "nl"})
    assert r.json()["name"] == "Wachten" and r.json()["email_template_ids"] == [template["id"]]
    etag = r.headers["ETag"]
    call(platform, "PATCH", f"/v1/lead-stages/{stage['id']}", 412, json={"remarks": "x"}, headers={"If-Match": '"99"'})
    patched = call(platform, "PATCH", f"/v1/lead-stages/{stage['id']}", 200, json={"remarks": "Wait for the call."},
                   headers={"If-Match": etag}).json()
    assert patched["remarks"] == "Wait for the call."
    call(platform, "PATCH", f"/v1/lead-tables/stage-groups/{group['id']}", 200, json={"names": {"en": "Renamed"}})
    call(platform, "PATCH", f"/v1/templates/{template['id']}", 200, json={"stage_ids": []})
    assert call(platform, "GET", f"/v1/lead-stages/{stage['id']}", 200).json()["email_template_ids"] == []

    call(platform, "DELETE", f"/v1/lead-tables/stage-groups/{group['id']}", 409)  # the stage refers to it
    call(platform, "POST", "/v1/lead-stages", 409, json={"names": {"en": "Again"}, "code": code})
    call(platform, "POST", "/v1/lead-stages", 422, json={"names": {"en": "Bad"}, "code": unique("E2E"),
                                                         "color": "blue"})
    call(platform, "DELETE", f"/v1/templates/{template['id']}", 204)
    call(platform, "DELETE", f"/v1/lead-stages/{stage['id']}", 204)
    call(platform, "DELETE", f"/v1/lead-tables/stage-groups/{group['id']}", 204)
    for path in (f"/v1/templates/{template['id']}", f"/v1/lead-stages/{stage['id']}",
                 f"/v1/lead-tables/stage-groups/{group['id']}"):
        call(platform, "GET", path, 404)
    call(platform, "GET", "/v1/lead-tables/colours", 404)


def test_a_viewer_reads_but_cannot_write(platform):
    main = next(r for r in call(platform, "GET", "/v1/opportunity-tables/roles", 200, roles=("viewer",)).json()["items"]
                if r["code"] == "MAIN")
    for method, path, body in [
        ("POST", "/v1/lead-stages", {"names": {"en": "X"}, "code": unique("V")}),
        ("POST", "/v1/opportunity-tables/sources", {"names": {"en": "X"}, "code": unique("V")}),
        ("POST", "/v1/templates", {"kind": "print", "name": "X"}),
        ("PATCH", f"/v1/opportunity-tables/roles/{main['id']}", {"index": 9}),
        ("DELETE", f"/v1/opportunity-tables/roles/{main['id']}", None),
    ]:
        call(platform, method, path, 403, roles=("viewer",), json=body)
    call(platform, "DELETE", f"/v1/opportunity-tables/roles/{main['id']}", 409)  # protected, even for an admin


def test_a_stage_change_reaches_kafka(platform):
    code = unique("KAFKA")
    stage = call(platform, "POST", "/v1/opportunity-stages", 201, json={"names": {"en": "Kafka"}, "code": code}).json()
    consumer = Consumer({"bootstrap.servers": platform.config.kafka_bootstrap, "group.id": f"e2e-{code}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["crm.catalogue.v1"])
    found = None
    # Read straight from Kafka (not through the gateway): the outbox relay publishes the event asynchronously.
    deadline = time.monotonic() + 30
    try:
        while found is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == stage["id"].encode():
                found = decode(msg.value())
    finally:
        consumer.close()
    assert found is not None, "the stage's event never reached crm.catalogue.v1"
    assert found.event_type == "catalogue.stage.created"
    assert (found.catalogue_entry.kind, found.catalogue_entry.code) == ("opportunity", code)


def _produce(platform, envelope) -> None:
    producer = Producer({"bootstrap.servers": platform.config.kafka_bootstrap})
    producer.produce("crm.leads.v1", key=envelope.aggregate_id, value=encode(envelope), headers=headers_for(envelope))
    assert producer.flush(10) == 0


def test_usage_is_learned_from_a_real_lead_event(platform):
    stage = call(platform, "POST", "/v1/lead-stages", 201,
                 json={"names": {"en": "In use"}, "code": unique("USED")}).json()
    lead_id = str(uuid.uuid4())
    record = PipelineRecord(id=lead_id, kind="lead", title="E2E usage", stage_id=stage["id"], version=1)
    _produce(platform, new_envelope("lead.created", "lead", lead_id, 1, record, producer="e2e"))

    # Wait until the catalogue's worker has learned it (a DELETE too early would just delete the stage):
    # the event was put on Kafka by the test, not written through the gateway, and is read from the database.
    engine = create_engine(platform.db_urls["catalogue"])
    deadline = time.monotonic() + 30
    known = None
    while known is None and time.monotonic() < deadline:
        with engine.connect() as conn:
            known = conn.execute(text("SELECT stage_id FROM stage_usage WHERE record_id = :id"),
                                 {"id": lead_id}).first()
        time.sleep(0.1)
    engine.dispose()
    assert known is not None and known.stage_id == stage["id"], "the lead event never reached the catalogue"
    problem = call(platform, "DELETE", f"/v1/lead-stages/{stage['id']}", 409).json()
    assert "1 lead is in this stage" in problem["detail"]

    _produce(platform, new_envelope("lead.deleted", "lead", lead_id, 2, RecordDeleted(id=lead_id, kind="lead"),
                                    producer="e2e"))
    # This event too is the test's own Kafka message, which no consistency token or wait covers.
    deadline = time.monotonic() + 30
    status = 409
    while status == 409 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = requests.delete(f"{platform.gateway_url}/v1/lead-stages/{stage['id']}", headers=platform.auth(),
                                 timeout=10).status_code
    assert status == 204

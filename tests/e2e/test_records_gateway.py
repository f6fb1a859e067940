"""Leads and opportunities through the gateway, on the real platform (PostgreSQL, Kafka).

The services' catalogue copies are fed by the catalogue's real events (its starter
configuration); trigger commands arrive on the real commands topic; a conversion completes
even with the opportunities worker killed while it is under way.

The gateway's read-your-writes means no retry for the client's own writes: a record that uses a
catalogue entry just made is created at once, and reads show it. ``eventually`` is only for what
happens asynchronously outside that contract (commands put on Kafka by the test, a killed worker).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from confluent_kafka import Producer

from crm.events.v1.records_pb2 import RecordCommand
from crm_events.envelope import encode, new_envelope

pytestmark = pytest.mark.e2e


def eventually(fn: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """``fn()`` once it is truthy: only for asynchronous effects the gateway's read-your-writes
    does not cover (trigger actions, time-based triggers, a killed worker's recovery)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


class Client:
    def __init__(self, platform, roles=("admin",), user="e2e-admin", office="office-1") -> None:
        self.base = platform.gateway_url
        self.headers = platform.auth(roles, user=user, office=office)

    def __call__(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kw)


def stage(client: Client, kind: str, code: str) -> dict:
    return next(s for s in client("GET", f"/v1/{kind}-stages").json()["items"] if s["code"] == code)


def create(client: Client, plural: str, body: dict) -> dict:
    """POST a record: 201 the first time (the catalogue entries it uses are known at once)."""
    r = client("POST", f"/v1/{plural}", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.mark.parametrize("plural,kind", [("leads", "lead"), ("opportunities", "opportunity")])
def test_records_through_the_gateway(platform, plural, kind):
    admin = Client(platform)
    tag = uuid.uuid4().hex[:8]
    group = admin("POST", f"/v1/{kind}-tables/groups", json={"names": {"en": f"VIP {tag}"}, "code": f"VIP{tag}"}).json()
    extra = {"amount": "2500.00", "currency": "EUR", "probability": 60} if kind == "opportunity" else {}
    record = create(admin, plural, {"title": f"Rec {tag}", **extra})
    assert record["stage"]["code"] in ("NEW", "PROSPECTING") and record["stage"]["name"]
    url = f"/v1/{plural}/{record['id']}"
    nl = admin("GET", url, headers={"Accept-Language": "nl"}).json()
    assert nl["stage"]["name"] != record["stage"]["name"]  # the Dutch name
    target = stage(admin, kind, "CONTACTED" if kind == "lead" else "PROPOSAL")
    r = admin("PATCH", url, json={"stage_id": target["id"]}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["stage"]["id"] == target["id"]
    assert admin("PATCH", url, json={"title": "stale"}, headers={"If-Match": '"1"'}).status_code == 412
    history = admin("GET", f"{url}/stage-history").json()["items"]
    assert [h["cause"] for h in history] == ["user", "user"]
    r = admin("POST", f"{url}/groups", json={"group_id": group["id"]})
    assert r.status_code == 201, r.text
    listed = admin("GET", f"/v1/{plural}", params={"filter": f'group_id = "{group["id"]}"'}).json()["items"]
    assert [x["id"] for x in listed] == [record["id"]]
    assert admin("GET", f"/v1/{plural}/overview").json()["all"] >= 1
    r = admin("POST", f"/v1/{plural}/bulk", json={"ids": [record["id"], str(uuid.uuid4())],
                                                  "action": "remove_from_group", "group_id": group["id"]})
    assert [x["status"] for x in r.json()["results"]] == ["ok", "error"]
    viewer = Client(platform, roles=("viewer",), user="v1", office="office-1")
    assert viewer("PATCH", url, json={"title": "x"}).status_code == 403
    assert Client(platform, roles=("viewer",), user="v2", office="elsewhere")("GET", url).status_code == 404
    assert admin("DELETE", url).status_code == 204
    assert admin("GET", url).status_code == 404


def test_a_trigger_command_is_applied_once(platform):
    admin = Client(platform)
    lead = create(admin, "leads", {"title": "Automate"})
    target = stage(admin, "lead", "QUALIFIED")
    command = new_envelope("lead.command.set_stage", "lead", lead["id"], 0,
                           RecordCommand(record_id=lead["id"], kind="lead", action="set_stage", stage_id=target["id"],
                                         trigger_id="trig-1"), trigger_depth=1)
    producer = Producer({"bootstrap.servers": platform.config.kafka_bootstrap})
    for _ in range(2):  # a redelivered command
        producer.produce("crm.leads.commands.v1", key=lead["id"].encode(), value=encode(command))
    producer.flush(10)
    url = f"/v1/leads/{lead['id']}"
    # The commands go straight onto Kafka (no gateway write, no token): the leads worker applies them later.
    eventually(lambda: admin("GET", url).json()["stage"]["id"] == target["id"], what="the command")
    time.sleep(1)  # time for the redelivered command to be (not) applied by the worker
    history = admin("GET", f"{url}/stage-history").json()["items"]
    assert [h["cause"] for h in history] == ["user", "trigger:trig-1"]


def test_conversion_through_the_gateway(platform):
    admin = Client(platform)
    lead = create(admin, "leads", {"title": "Convert me"})
    key = uuid.uuid4().hex
    r = admin("POST", f"/v1/leads/{lead['id']}/convert", json={"amount": "900.00", "currency": "EUR"},
              headers={"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["lead"]["converted_opportunity_id"] == body["opportunity"]["id"]
    assert body["lead"]["stage"]["code"] == "CONVERTED"
    assert body["opportunity"]["lead_id"] == lead["id"] and body["opportunity"]["amount"] == "900.00"
    assert r.headers["Location"] == f"/v1/opportunities/{body['opportunity']['id']}"
    again = admin("POST", f"/v1/leads/{lead['id']}/convert", json={"amount": "900.00", "currency": "EUR"},
                  headers={"Idempotency-Key": key})
    assert again.status_code == 201 and again.json()["opportunity"]["id"] == body["opportunity"]["id"]
    assert admin("POST", f"/v1/leads/{lead['id']}/convert", json={}).status_code == 409


def test_conversion_completes_after_the_opportunities_worker_is_killed(platform):
    admin = Client(platform)
    lead = create(admin, "leads", {"title": "Survive a crash"})
    platform.processes.kill("opportunities-worker")
    try:
        r = admin("POST", f"/v1/leads/{lead['id']}/convert", json={})
        assert r.status_code == 202, r.text  # the lead's side is done; the opportunity is on its way
        location = r.headers["Location"]
        # Not a false 404 for the client's own conversion: the opportunities service is behind (its worker is
        # down), so the gateway says "not yet" (503, Retry-After).
        pending = admin("GET", location)
        assert pending.status_code == 503 and pending.headers["Retry-After"], (pending.status_code, pending.text)
    finally:
        platform.processes.restart("opportunities-worker")
    # The restarted opportunities worker completes the conversion: a killed worker's recovery.
    opportunity = eventually(lambda: admin("GET", location).json() if admin("GET", location).status_code == 200
                             else None, timeout=60, what="the opportunity after the restart")
    assert opportunity["lead_id"] == lead["id"]
    same = admin("GET", "/v1/opportunities", params={"lead_id": lead["id"]}).json()["items"]
    assert [o["id"] for o in same] == [opportunity["id"]]

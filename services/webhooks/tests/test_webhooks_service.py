"""The webhooks service in one process, on SQLite and PostgreSQL: its API (the service's own app),
the events consumer's handler fed with events built as the records services send them, and the
dispatcher sending to real HTTP receivers on loopback. Settings are the production ones (no
loopback) unless a test says otherwise; a test that needs a name to resolve switches the
service's resolver (``crm_webhooks.targets.resolve``)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.linking_pb2 import LinkingChange
from crm.events.v1.records_pb2 import PipelineRecord, StageChanged
from crm_events.envelope import new_envelope
from crm_events.topics import LEADS
from crm_kit import consistency
from crm_kit.cli import migrate
from crm_kit.db import Database, utcnow
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token
from crm_webhooks import targets
from crm_webhooks.delivery import Dispatcher
from crm_webhooks.ingest import handle
from crm_webhooks.tables import attempts, deliveries, events, subscriptions

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "e2e"))
from webhook_receiver import Receiver  # noqa: E402 - the e2e tests' receiver, shared

pytestmark = pytest.mark.integration
SECRET = "webhooks-test-secret-long-enough-for-hs256"
PUBLIC = "93.184.216.34"  # a public address (nothing is sent to it in these tests)


def auth(roles: tuple[str, ...] = ("admin",), office: str = "o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id="u1", name="U1", office_id=office,
                                                     roles=list(roles))}


class Env:
    def __init__(self, url: str, **settings: str) -> None:
        spec = find_service("webhooks")
        self.settings = load_settings("domain", {
            "CRM_SERVICE_NAME": "webhooks", "CRM_DATABASE_URL": url, "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
            "CRM_JWT_SECRET": SECRET, "CRM_WEBHOOK_SECRETS_KEY": Fernet.generate_key().decode(),
            "CRM_WEBHOOK_TIMEOUT": "5", **settings})
        migrate(spec, self.settings)
        self.client = spec.build_app(self.settings).test_client()
        self.db = Database(url)
        self.dispatcher = Dispatcher(self.settings, self.db, backoff_base=0.01)

    def subscribe(self, url: str, **body: Any) -> dict[str, Any]:
        r = self.client.post("/v1/webhooks", json={"url": url, "event_types": ["*"], **body}, headers=auth())
        assert r.status_code == 201, r.json
        return dict(r.json)

    def lead(self, record_id: str, version: int, **fields: str) -> None:
        """The consumer's handling of one lead event, in a transaction of its own."""
        self.take_in([lead_event(record_id, version, **fields)])

    def take_in(self, envelopes: list[Envelope]) -> None:
        """The consumer's handling of ``envelopes`` in one transaction (one poll's batch)."""
        with self.db.transaction() as s:
            for envelope in envelopes:
                handle(s, envelope)
            handle.finish(s)

    def log(self, sub_id: str) -> list[Any]:
        with self.db.transaction() as s:
            return list(s.execute(select(attempts).where(attempts.c.subscription_id == sub_id)
                                  .order_by(attempts.c.id)).all())


def lead_event(record_id: str, version: int, *, stage: str = "s1", source: str = "web", office: str = "o1",
               what: str = "created", from_stage: str = "") -> Envelope:
    """A lead event as the leads service sends it."""
    record = PipelineRecord(id=record_id, kind="lead", title=f"Lead {record_id[:4]}", owner_id="u1",
                            office_id=office, stage_id=stage, source_id=source, version=version)
    record.modified_at.FromDatetime(utcnow())
    payload: Any = record
    if what == "stage_changed":
        payload = StageChanged(record=record, from_stage_id=from_stage, to_stage_id=stage)
    return new_envelope(f"lead.{what}", "lead", record_id, version, payload, producer="leads")


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names the service's resolver knows (a test fills it); any other name does not resolve."""
    table: dict[str, list[str]] = {}

    def resolve(host: str, _port: int) -> list[str]:
        if host in table:
            return table[host]
        raise OSError(f"unknown host {host}")
    monkeypatch.setattr(targets, "resolve", resolve)
    return table


@pytest.fixture
def env(any_db_url: str) -> Any:
    made = Env(any_db_url)
    yield made
    made.db.dispose()


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::1", "::ffff:10.0.0.7",
                                     "192.168.1.1", "172.16.0.1", "0.0.0.0", "fd00::1"])
def test_a_target_resolving_to_a_private_address_is_refused_at_save(env, resolver, address):
    resolver["hooks.example.test"] = [PUBLIC, address]
    r = env.client.post("/v1/webhooks", json={"url": "https://hooks.example.test/x", "event_types": ["*"]},
                        headers=auth())
    assert r.status_code == 422, r.json
    assert r.json["errors"][0]["field"] == "url" and address in r.json["errors"][0]["message"]
    with env.db.transaction() as s:
        assert s.execute(select(subscriptions)).first() is None


@pytest.mark.parametrize("address", ["169.254.169.254", "127.0.0.1", "10.20.30.40", "::1"])
def test_a_target_that_resolves_elsewhere_later_is_refused_at_delivery(env, resolver, address):
    resolver["hooks.example.test"] = [PUBLIC]
    sub = env.subscribe("https://hooks.example.test/x", event_types=["lead.created"])
    resolver["hooks.example.test"] = [address]  # DNS rebinding: now the metadata address, loopback, ...
    env.lead(str(uuid.uuid4()), 1)
    env.dispatcher.run_until_idle()
    log = env.log(sub["id"])  # (the quick test backoff may have retried it already: refused each time)
    assert log and all(a.result == "refused" and address in a.error and a.status_code is None for a in log)
    with env.db.transaction() as s:  # not delivered: it waits for its retry
        assert s.execute(select(deliveries.c.state)).scalar() == "pending"


def test_http_and_loopback_only_with_the_local_setting(any_db_url):
    receiver = Receiver()
    try:
        strict = Env(any_db_url)
        r = strict.client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["*"]}, headers=auth())
        assert r.status_code == 422 and "https" in r.json["errors"][0]["message"]
        local = Env(any_db_url, CRM_WEBHOOK_ALLOW_LOOPBACK="true")
        sub = local.subscribe(receiver.url, event_types=["lead.created"])
        lead = str(uuid.uuid4())
        local.lead(lead, 1)
        local.dispatcher.run_until_idle()
        [payload] = receiver.verified(sub["secret"])
        assert payload["type"] == "lead.created" and payload["data"]["id"] == lead
        assert payload["data"]["changes"] == {}
        local.db.dispose()
        strict.db.dispose()
    finally:
        receiver.stop()


def test_changes_filters_offices_and_rotation(any_db_url):
    receiver, office_receiver = Receiver(), Receiver()
    env = Env(any_db_url, CRM_WEBHOOK_ALLOW_LOOPBACK="true", CRM_ROLE_PERMISSIONS=json.dumps(
        {"admin": ["webhooks:admin"], "hooks": ["webhooks:admin"], "marketing": ["leads:view"]}))
    try:
        sub = env.subscribe(receiver.url, event_types=["lead.created", "lead.stage_changed"],
                            filter='source_id = "web" AND stage_id != "s9"')
        assert env.client.get("/v1/webhooks", headers=auth(("marketing",))).status_code == 403
        # A role with webhooks:admin that does not see every office: its subscriptions carry its office's events.
        r = env.client.post("/v1/webhooks", json={"url": office_receiver.url, "event_types": ["lead.created"]},
                            headers=auth(("hooks",), office="o2"))
        assert r.status_code == 201, r.json
        office_sub = r.json
        assert env.client.get(f"/v1/webhooks/{office_sub['id']}", headers=auth(("hooks",), office="o1")).status_code \
            == 404
        assert {x["id"] for x in env.client.get("/v1/webhooks", headers=auth(("hooks",), office="o1")).json["items"]} \
            == {sub["id"]}  # its own office's (the admin's, made in o1), not o2's
        assert env.client.get(f"/v1/webhooks/{office_sub['id']}", headers=auth()).status_code == 200
        web, fair, other_office = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        env.lead(web, 1)
        env.lead(fair, 1, source="fair")
        env.lead(web, 2, stage="s2", what="stage_changed", from_stage="s1")
        env.lead(web, 3, stage="s9", what="stage_changed", from_stage="s2")  # the filter says no
        env.lead(other_office, 1, office="o2")  # the subscription's creator is an admin: every office
        rotated = env.client.post(f"/v1/webhooks/{sub['id']}/rotate-secret", headers=auth())
        assert rotated.status_code == 200 and rotated.json["secret"] != sub["secret"]
        env.dispatcher.run_until_idle()
        old = {p["data"]["id"] + p["type"]: p for p in receiver.verified(sub["secret"])}
        new = receiver.verified(rotated.json["secret"])  # both secrets sign during the overlap
        assert len(new) == len(old) == 3
        assert set(old) == {web + "lead.created", web + "lead.stage_changed", other_office + "lead.created"}
        moved = old[web + "lead.stage_changed"]["data"]
        assert moved["changes"]["stage_id"] == {"from": "s1", "to": "s2"} and moved["version"] == 2
        assert "version" not in moved["changes"] and "modified_at" not in moved["changes"]
        assert [p["data"]["id"] for p in office_receiver.verified(office_sub["secret"])] == [other_office]
        bad = env.client.patch(f"/v1/webhooks/{sub['id']}", json={"filter": 'source_id = web'}, headers=auth())
        assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "filter" and "pointer" in bad.json
    finally:
        env.db.dispose()
        receiver.stop()
        office_receiver.stop()


def test_an_endpoint_failing_too_long_is_disabled_and_gets_its_backlog_when_enabled(any_db_url):
    failing = {"on": True}
    receiver = Receiver(lambda _n: 503 if failing["on"] else 204)
    env = Env(any_db_url, CRM_WEBHOOK_ALLOW_LOOPBACK="true", CRM_WEBHOOK_RETRY_DAYS="0")
    try:
        sub = env.subscribe(receiver.url, event_types=["lead.created"])
        leads = [str(uuid.uuid4()) for _ in range(3)]
        env.lead(leads[0], 1)
        env.dispatcher.run_until_idle()
        shown = env.client.get(f"/v1/webhooks/{sub['id']}", headers=auth()).json
        assert shown["active"] is False and "503" in shown["disabled_reason"] and shown["backlog"] == 1
        for lead in leads[1:]:  # events keep queueing while it is disabled
            env.lead(lead, 1)
        env.dispatcher.run_until_idle()
        assert len(receiver.requests) == 1  # nothing is sent to a disabled endpoint
        failing["on"] = False
        version = shown["version"]
        r = env.client.patch(f"/v1/webhooks/{sub['id']}", json={"active": True},
                             headers={**auth(), "If-Match": f'"{version}"'})
        assert r.status_code == 200 and r.json["disabled_reason"] is None, r.json
        env.dispatcher.run_until_idle()
        assert sorted(p["data"]["id"] for p in receiver.verified(sub["secret"])) == sorted(leads)  # all of them
        log = env.client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=auth()).json["items"]
        assert [x["result"] for x in log] == ["delivered"] * 3 + ["failed"]
    finally:
        env.db.dispose()
        receiver.stop()


def test_a_redirect_is_not_followed(any_db_url):
    target = Receiver()
    redirecting = Receiver(lambda _n: 307, headers={"Location": target.url})
    env = Env(any_db_url, CRM_WEBHOOK_ALLOW_LOOPBACK="true")
    try:
        sub = env.subscribe(redirecting.url, event_types=["lead.created"])
        env.lead(str(uuid.uuid4()), 1)
        env.dispatcher.tick()
        redirecting.wait_for(lambda rc: len(rc.requests) >= 1, what="the first attempt")
        env.dispatcher.run_until_idle()
        log = env.log(sub["id"])
        assert log and all(a.result == "failed" and a.status_code == 307 and "redirect" in a.error for a in log)
        assert target.requests == [] and redirecting.processed == {}
    finally:
        env.db.dispose()
        target.stop()
        redirecting.stop()


def test_replay_sends_again_what_happened_since(any_db_url):
    receiver = Receiver()
    env = Env(any_db_url, CRM_WEBHOOK_ALLOW_LOOPBACK="true")
    try:
        sub = env.subscribe(receiver.url, event_types=["*"])
        r = env.client.post(f"/v1/webhooks/{sub['id']}/test", headers=auth())
        assert r.status_code == 202
        env.dispatcher.run_until_idle()
        assert [got.json["type"] for got in receiver.requests] == ["webhook.test"]
        receiver.requests.clear()
        receiver.processed.clear()
        before = utcnow()
        leads = [str(uuid.uuid4()) for _ in range(4)]
        for lead in leads:
            env.lead(lead, 1)
        env.dispatcher.run_until_idle()
        r = env.client.post(f"/v1/webhooks/{sub['id']}/replay", json={"since": before.isoformat()}, headers=auth())
        assert r.status_code == 202 and r.json == {"queued": 4}
        future = (utcnow() + dt.timedelta(days=1)).isoformat()
        r = env.client.post(f"/v1/webhooks/{sub['id']}/replay", json={"since": future}, headers=auth())
        assert r.json == {"queued": 0}
        env.dispatcher.run_until_idle()
        ids = [got.json["data"]["id"] for got in receiver.requests]
        assert sorted(ids[:4]) == sorted(ids[4:]) == sorted(leads)  # the replay sends each again
        assert len(receiver.processed) == 4  # the same webhook-ids: an idempotent receiver takes each once
        r = env.client.post("/v1/webhooks/nope/replay", json={"since": before.isoformat()}, headers=auth())
        assert r.status_code == 404
    finally:
        env.db.dispose()
        receiver.stop()


def test_subscriptions_answer_at_once_while_the_event_copy_is_behind(env):
    """Subscriptions are the service's own: a client's token (the gateway's offsets) never makes them
    wait - not even replay (what the copy has not taken in yet is queued when it arrives); the feed
    does (503 when the copy stays behind)."""
    behind = {**auth(), consistency.REQUIRE_OFFSETS: consistency.encode_offsets({LEADS: {0: 999}}),
              consistency.REQUIRE_MODE: consistency.STRICT, consistency.REQUIRE_WAIT: "0.05"}
    r = env.client.post("/v1/webhooks", json={"url": "https://203.0.113.9/x", "event_types": ["*"]}, headers=behind)
    assert r.status_code == 422  # 203.0.113.0/24 is documentation space, not public: refused, but at once
    assert r.headers[consistency.COPIES] == "none"  # final: the gateway passes it on, asks nobody again
    r = env.client.get("/v1/webhooks", headers=behind)
    assert r.status_code == 200 and r.headers[consistency.COPIES] == "none"
    with env.db.transaction() as s:
        s.execute(subscriptions.insert().values(
            id="s1", url="https://example.com/x", event_types=["*"], description="", active=True, office_id="o1",
            all_offices=True, secret=env.dispatcher.vault.seal("whsec_x"), secret_hint="x", version=1,
            created_at=utcnow(), created_by="u1", modified_at=utcnow(), modified_by="u1"))
    assert env.client.post("/v1/webhooks/s1/test", headers=behind).status_code == 202
    assert env.client.get("/v1/webhooks/s1/deliveries", headers=behind).status_code == 200
    r = env.client.post("/v1/webhooks/s1/replay", json={"since": "2026-01-01T00:00:00Z"}, headers=behind)
    assert r.status_code == 202
    r = env.client.get("/v1/events", headers=behind)
    assert r.status_code == 503 and r.headers["Retry-After"] and consistency.COPIES not in r.headers


def test_a_batch_is_taken_in_as_its_events_one_by_one(any_db_url, resolver):
    """One poll's events in one transaction (the consumer's batch): each endpoint's deliveries are in
    the events' order, each event's changes are against the event before it in the same batch, a
    link's office is that of a record first seen in the same batch, and an event seen twice is
    logged and queued once."""
    resolver["example.com"] = [PUBLIC]
    env = Env(any_db_url, CRM_ROLE_PERMISSIONS=json.dumps({"admin": ["webhooks:admin"], "hooks": ["webhooks:admin"]}))
    try:
        everything = env.subscribe("https://example.com/all", event_types=["*"])
        filtered = env.subscribe("https://example.com/s2", event_types=["lead.created", "lead.stage_changed"],
                                 filter='stage_id = "s2"')
        r = env.client.post("/v1/webhooks", json={"url": "https://example.com/o1", "event_types": ["*"]},
                            headers=auth(("hooks",), office="o1"))
        assert r.status_code == 201, r.json
        hooks_o1 = r.json
        lead = str(uuid.uuid4())
        link = f"{uuid.uuid4()}:{lead}"  # a link's id, as the linking service makes it: <contact id>:<record id>
        linked = new_envelope("linking.contact.linked", "record_contact", link, 1, LinkingChange(
            entity="record_contact", id=link, record_kind="lead", record_id=lead, version=1), producer="linking")
        created = lead_event(lead, 1, office="o2")
        batch = [created, lead_event(lead, 2, stage="s2", what="stage_changed", from_stage="s1", office="o2"),
                 linked, lead_event(lead, 3, stage="s3", what="stage_changed", from_stage="s2", office="o2"),
                 created]
        env.take_in(batch)
        env.take_in([created, linked])  # a second delivery of both, in a batch of its own: nothing new
        with env.db.transaction() as s:
            logged = s.execute(select(events.c.event_id, events.c.office_id, events.c.body)
                               .order_by(events.c.seq)).all()
            queued = {sub: [row.event_id for row in s.execute(
                select(deliveries.c.event_id).where(deliveries.c.subscription_id == sub).order_by(deliveries.c.id))]
                for sub in (everything["id"], filtered["id"], hooks_o1["id"])}
        order = [e.event_id for e in batch[:4]]
        assert [row.event_id for row in logged] == order
        assert [row.office_id for row in logged] == ["o2"] * 4  # the link's record was new in this batch
        bodies = [json.loads(row.body) for row in logged]
        assert bodies[1]["data"]["changes"]["stage_id"] == {"from": "s1", "to": "s2"}
        assert bodies[3]["data"]["changes"]["stage_id"] == {"from": "s2", "to": "s3"}
        assert bodies[2]["type"] == "contact.linked" and bodies[2]["data"]["record_id"] == lead
        assert queued[everything["id"]] == order
        assert queued[filtered["id"]] == [order[1]]  # the filter held on the record as that event left it
        assert queued[hooks_o1["id"]] == []  # office o1's endpoint gets nothing of o2, the link included
    finally:
        env.db.dispose()

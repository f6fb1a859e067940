"""`make chaos` counts webhook deliveries: a real receiver in the chaos process verifies every
request's Standard Webhooks signature and fails some on purpose; the expected events are the
public ones of the outboxes the webhooks service reads (decided by the service's own mapping);
the check counts the lost, allows duplicates with the same body and wants one record's first
deliveries in version order. The webhooks worker is killed like every other, and only workers
that run a relay get the relay crash."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from types import SimpleNamespace

import requests
from standardwebhooks.webhooks import Webhook

from crm.events.v1.linking_pb2 import LinkingChange
from crm.events.v1.probe_pb2 import Probe
from crm.events.v1.records_pb2 import PipelineRecord, StageChanged
from crm_devstack.chaos.faults import PUBLISHERS, plan_faults
from crm_devstack.chaos.observe import Backlog, event_types
from crm_devstack.chaos.run import ChaosReport
from crm_devstack.chaos.verify import Check, Verification
from crm_devstack.chaos.webhooks import (
    PENDING,
    VERIFIED,
    Arrival,
    Expected,
    PublicEvents,
    WebhookVerification,
    public_events,
    receiver,
    verify_deliveries,
)
from crm_devstack.chaos.workload import Stats
from crm_devstack.stack import SERVICES
from crm_devstack.topics_table import plan_settings
from crm_events.envelope import new_envelope
from crm_events.topics import LEADS, LINKING, OPPORTUNITIES, commands_for
from crm_kit.service import find_service

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


def _post(url: str, secret: str, webhook_id: str, body: bytes) -> requests.Response:
    now = dt.datetime.now(dt.UTC)
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(secret).sign(webhook_id, now, body), "content-type": "application/json"}
    return requests.post(url, data=body, headers=headers, timeout=10)


# -- the receiver ------------------------------------------------------------------------------


def test_the_receiver_keeps_each_request_verifies_its_signature_and_fails_every_nth():
    with receiver(fail_every=5) as endpoint:
        endpoint.set_secret(SECRET)
        with requests.Session() as session:  # one kept-alive connection, like the worker's pool
            statuses = []
            for n in range(10):
                now = dt.datetime.now(dt.UTC)
                body = f'{{"type":"lead.created","n":{n}}}'.encode()
                statuses.append(session.post(endpoint.url, data=body, timeout=10, headers={
                    "webhook-id": f"msg_{n}", "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": Webhook(SECRET).sign(f"msg_{n}", now, body)}).status_code)
        forged = _post(endpoint.url, "whsec_" + "A" * 32, "msg_forged", b"{}")
        arrivals = endpoint.arrivals()
    assert statuses == [200, 200, 200, 200, 500] * 2
    assert forged.status_code == 200  # it answers; the check counts it
    assert [a.number for a in arrivals] == list(range(1, 12))
    assert [a.webhook_id for a in arrivals[:3]] == ["msg_0", "msg_1", "msg_2"]
    assert arrivals[2].body == b'{"type":"lead.created","n":2}'
    assert arrivals[2].headers["webhook-id"] == "msg_2" and "webhook-signature" in arrivals[2].headers
    assert [a.signature for a in arrivals[:10]] == [VERIFIED] * 10
    assert "No matching signature" in arrivals[10].signature
    assert [a.delivered for a in arrivals[:5]] == [True, True, True, True, False]


def test_requests_before_the_secret_is_known_are_verified_once_it_is():
    with receiver() as endpoint:
        _post(endpoint.url, SECRET, "msg_early", b'{"type":"lead.created"}')
        assert endpoint.arrivals()[0].signature == PENDING
        endpoint.set_secret(SECRET)
        assert endpoint.arrivals()[0].signature == VERIFIED


def test_waiting_for_the_receiver_is_bounded_and_ends_once_every_event_was_answered_2xx():
    with receiver(fail_every=2) as endpoint:
        endpoint.set_secret(SECRET)
        _post(endpoint.url, SECRET, "msg_a", b"{}")
        _post(endpoint.url, SECRET, "msg_b", b"{}")  # answered 500: not there yet
        complete, waited = endpoint.wait_for({"msg_a", "msg_b"}, timeout=0.3)
        assert not complete and 0.3 <= waited < 5
        _post(endpoint.url, SECRET, "msg_b", b"{}")  # the retry
        assert endpoint.wait_for({"msg_a", "msg_b"}, timeout=5)[0]


# -- the expected events ------------------------------------------------------------------------


def _record(kind: str, record_id: str, version: int, stage: str = "s1") -> PipelineRecord:
    return PipelineRecord(id=record_id, kind=kind, title="chaos", office_id="office-1", stage_id=stage,
                          version=version)


def test_the_expected_events_are_the_public_ones_of_the_webhooks_topics_written_after_subscribing():
    lead = str(uuid.uuid4())
    created = new_envelope("lead.created", "lead", lead, 1, _record("lead", lead, 1))
    moved = new_envelope("lead.stage_changed", "lead", lead, 2,
                         StageChanged(record=_record("lead", lead, 2, "s2"), from_stage_id="s1", to_stage_id="s2"))
    probe = new_envelope("probe", "probe", lead, 1, Probe(note="not public"))
    company = str(uuid.uuid4())
    company_created = new_envelope("linking.company.created", "company", company, 1,
                                   LinkingChange(entity="company", id=company, version=1))
    before = new_envelope("opportunity.created", "opportunity", lead, 1, _record("opportunity", lead, 1))
    elsewhere = new_envelope("lead.created", "lead", lead, 1, _record("lead", lead, 1))  # not a topic it reads
    envelopes = {e.event_id: e for e in (created, moved, probe, company_created, before, elsewhere)}

    def row(envelope, row_id, topic, at=T0):
        return SimpleNamespace(id=row_id, event_id=envelope.event_id, topic=topic, created_at=at)

    outboxes = {
        "leads": [row(created, 1, LEADS), row(moved, 2, LEADS), row(probe, 3, LEADS)],
        "linking": [row(company_created, 7, LINKING)],
        "opportunities": [row(before, 4, OPPORTUNITIES, T0 - dt.timedelta(seconds=1))],
        "triggers": [row(elsewhere, 1, commands_for("leads"))],
    }
    found = public_events(outboxes, envelopes, {LEADS, OPPORTUNITIES, LINKING}, since=T0)
    assert found.expected == {
        created.event_id: Expected(created.event_id, "lead.created", f"lead:{lead}", 1, ("leads", 1)),
        moved.event_id: Expected(moved.event_id, "lead.stage_changed", f"lead:{lead}", 2, ("leads", 2)),
        company_created.event_id: Expected(company_created.event_id, "company.created", f"company:{company}", 1,
                                           ("linking", 7)),
    }
    assert list(found.earlier) == [before.event_id]


def test_the_chaos_run_reads_the_topics_of_the_webhooks_consumers_from_their_worker_plan(tmp_path):
    # The run takes the topics from the webhooks service's consumer groups (observe.subscriptions);
    # every one of its consumers acts on every type (an inbox row each), the public ones are delivered.
    handled = event_types("webhooks", plan_settings("webhooks", tmp_path))
    assert handled == {"webhooks.events": None}


# -- the check ---------------------------------------------------------------------------------


def _expected(*events: tuple[str, str, int]) -> PublicEvents:
    found = PublicEvents()
    for n, (event_id, key, version) in enumerate(events):
        found.expected[event_id] = Expected(event_id, "lead.updated", key, version, ("leads", n))
    return found


def _arrivals(*requests_: tuple[str, int] | tuple[str, int, bytes]) -> list[Arrival]:
    arrivals = []
    for n, item in enumerate(requests_, start=1):
        webhook_id, status = item[0], item[1]
        body = item[2] if len(item) > 2 else b'{"type":"lead.updated","data":{"id":"%s"}}' % webhook_id.encode()
        arrivals.append(Arrival(n, webhook_id, body, {"webhook-id": webhook_id}, status, VERIFIED))
    return arrivals


def test_every_expected_event_answered_2xx_is_delivered_and_duplicates_with_the_same_body_are_allowed():
    events = _expected(("e1", "lead:a", 1), ("e2", "lead:a", 2), ("e3", "lead:b", 1))
    result = verify_deliveries(events, _arrivals(("e1", 200), ("e3", 500), ("e2", 200), ("e1", 200), ("e3", 200)))
    assert (result.expected, result.delivered, result.lost, result.duplicates) == (3, 3, 0, 1)
    assert (result.requests, result.answered_500, result.signatures_verified) == (5, 1, 5)
    assert result.ok, result.examples


def test_an_event_only_ever_answered_500_or_never_sent_is_lost():
    events = _expected(("e1", "lead:a", 1), ("e2", "lead:a", 2), ("e3", "lead:b", 1))
    result = verify_deliveries(events, _arrivals(("e1", 200), ("e2", 500)))
    assert (result.delivered, result.lost) == (1, 2)
    assert not result.ok
    assert any("e2" in e and "never delivered" in e for e in result.examples)


def test_one_records_first_deliveries_must_come_in_version_order():
    events = _expected(("e1", "lead:a", 1), ("e2", "lead:a", 2), ("e3", "lead:a", 3), ("x1", "lead:b", 1))
    # e3 (v3) first came before e2 (v2); a later redelivery of e1 does not count; lead b is apart.
    result = verify_deliveries(events, _arrivals(("x1", 200), ("e1", 200), ("e3", 200), ("e2", 200), ("e1", 200)))
    assert (result.lost, result.out_of_order) == (0, 1)
    assert not result.ok
    assert any("lead:a: v3" in e for e in result.examples)
    # A 500-answered early attempt is no delivery: what counts is the first 2xx.
    in_order = verify_deliveries(events, _arrivals(("e2", 500), ("e1", 200), ("e2", 200), ("e3", 200), ("x1", 200)))
    assert in_order.out_of_order == 0 and in_order.ok


def test_a_bad_signature_another_body_an_unknown_id_or_a_wrong_type_fails_the_check():
    events = _expected(("e1", "lead:a", 1), ("e2", "lead:b", 1), ("e3", "lead:c", 1))
    arrivals = _arrivals(("e1", 200), ("e2", 200), ("e2", 200, b'{"type":"lead.updated","other":1}'),
                         ("e3", 200, b'{"type":"lead.deleted"}'), ("zz", 200))
    arrivals[0].signature = "WebhookVerificationError: No matching signature found"
    result = verify_deliveries(events, arrivals)
    assert result.lost == 0
    assert (result.bad_signatures, result.bodies_differ, result.wrong_type, result.unknown) == (1, 1, 1, 1)
    assert not result.ok


def test_events_from_before_the_subscription_may_come_and_are_not_counted():
    events = _expected(("e1", "lead:a", 2))
    events.earlier["e0"] = Expected("e0", "lead.updated", "lead:a", 1, ("leads", 0))
    result = verify_deliveries(events, _arrivals(("e0", 200), ("e1", 200)))
    assert (result.expected, result.delivered, result.earlier, result.unknown) == (1, 1, 1, 0)
    assert result.ok


def test_no_expected_event_at_all_is_not_a_pass():
    assert not verify_deliveries(PublicEvents(), []).ok


# -- the report and the faults -----------------------------------------------------------------


def _report(webhooks: WebhookVerification | None) -> ChaosReport:
    from crm_devstack.chaos.faults import FAULT_KINDS, Fault, InjectedFault

    faults = [InjectedFault(Fault(kind, "x"), 1.0, 1.0, 10) for kind in FAULT_KINDS]
    checks = [Check("events on Kafka", checked=10)]
    if webhooks is not None:
        checks.append(Check("webhooks: every public event delivered to the receiver", checked=webhooks.expected,
                            lost=webhooks.lost))
    return ChaosReport(Counter(create=10), 60.0, faults, Stats(), 5.0, True, Backlog(), 0,
                       Verification(checks, 1, 0, {"events": 10}), [], webhooks=webhooks)


def test_the_report_counts_webhook_deliveries_and_fails_when_one_is_lost():
    good = WebhookVerification(expected=10, delivered=10, duplicates=2, requests=13, answered_500=1,
                               signatures_verified=13)
    report = _report(good)
    assert report.ok and report.lost == 0 and report.webhooks_lost == 0
    text = report.render()
    assert "webhook deliveries: 10 public events expected, 10 delivered, 0 lost, 2 duplicate deliveries" in text
    assert "1 answered 500 on purpose" in text
    assert report.to_dict()["webhooks"]["receiver_500s"] == 1

    lost = _report(WebhookVerification(expected=10, delivered=9, lost=1, requests=9, signatures_verified=9))
    assert not lost.ok and lost.lost == 1 and lost.webhooks_lost == 1
    assert lost.render().endswith("FAILED")
    unsigned = _report(WebhookVerification(expected=1, delivered=1, requests=1, bad_signatures=1))
    assert not unsigned.ok
    assert not _report(None).ok  # the check did not run


def test_the_webhooks_worker_is_killed_and_only_workers_with_a_relay_get_the_relay_crash(tmp_path):
    relays = []
    for service in SERVICES:
        spec = find_service(service)
        assert spec.worker_plan is not None
        if spec.worker_plan(plan_settings(service, tmp_path)).relay:
            relays.append(service)
    assert "webhooks" in SERVICES and "webhooks" not in relays
    assert PUBLISHERS == tuple(relays)
    plan = plan_faults()
    assert Counter(f.kind for f in plan) == {"worker_kill": len(SERVICES), "relay_crash": len(relays),
                                             "kafka_kill": 1, "postgres_restart": 1}
    assert {f.target for f in plan if f.kind == "worker_kill"} == set(SERVICES)


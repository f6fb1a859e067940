"""``make chaos`` at a small scale: faults of every kind under a steady load, then nothing lost
or duplicated, checked against every service's own database and the broker, no client
refused (404/422) a request about its own writes, and every public event delivered to a webhook
receiver (which fails some requests on purpose), signed, in order per record.

The run has its own Kafka broker and PostgreSQL cluster (it kills and restarts them), not the
session's shared ones.
"""

from __future__ import annotations

import pytest

from crm_devstack.chaos import FAULT_KINDS, ChaosConfig, own_infrastructure, plan_faults, run_chaos

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_no_event_or_effect_is_lost_or_duplicated_while_everything_fails_in_turn():
    # Every fault kind once, the workers each killed once (the webhooks worker too); the relay
    # crash on the leads service, whose events every other service consumes.
    faults = plan_faults(relay_crashes=("leads",))
    config = ChaosConfig(operations=300, clients=4, rate=8, faults=faults, catch_up_timeout=360)
    with own_infrastructure() as (kafka, postgres):
        report = run_chaos(kafka, postgres, config, log=lambda message: print(message, flush=True))
    print(report.render())

    assert not report.errors, report.errors
    assert {kind: report.faults_by_kind[kind] for kind in FAULT_KINDS} == {
        "kafka_kill": 1, "worker_kill": 6, "relay_crash": 1, "postgres_restart": 1}
    assert report.total_operations >= 300
    assert report.caught_up, str(report.backlog)
    verification = report.verification
    assert verification is not None
    # The relay crash published a batch that was published again after the restart.
    assert verification.republished > 0
    assert verification.counts["lead trigger executions applied"] > 0
    assert verification.counts["opportunity trigger executions applied"] > 0
    failing = [f"{c.name}: lost {c.lost}, duplicated {c.duplicated}: {c.examples}" for c in verification.checks
               if c.lost or c.duplicated]
    assert failing == []
    assert (report.lost, report.duplicated, verification.dead_lettered) == (0, 0, 0)
    assert report.stats.unexpected == []  # no 500 even while PostgreSQL restarts
    # Read-your-writes: the clients carry their consistency tokens, so no request about their own
    # records (a stage change, a read of it, its contacts tab from linking) is ever refused.
    assert {"stage_change", "read", "linked_read"} <= set(report.stats.own_requests)
    assert report.stats.own_requests["linked_read"] >= report.operations["create"] > 0
    assert report.stats.refused == {}, report.stats.refusal_examples
    assert report.own_writes_refused == 0
    # Webhooks: every public event of the run reached the receiver at least once, each request's
    # signature verified by the Standard Webhooks reference verifier, duplicates with the same body,
    # one record's first deliveries in version order - though the receiver answered some 500.
    webhooks = report.webhooks
    assert webhooks is not None
    assert report.operations["link"] > 0  # linking events (a link's long id) are among those delivered
    assert webhooks.expected > 0 and webhooks.lost == 0, webhooks.examples
    assert webhooks.delivered == webhooks.expected
    assert webhooks.answered_500 > 0
    assert (webhooks.bad_signatures, webhooks.bodies_differ, webhooks.out_of_order, webhooks.wrong_type,
            webhooks.unknown) == (0, 0, 0, 0, 0), webhooks.examples
    assert report.ok

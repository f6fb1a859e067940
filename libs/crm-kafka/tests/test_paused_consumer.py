"""Backpressure: a consumer waiting for its database pauses its partitions and keeps polling, so
an outage longer than ``max.poll.interval.ms`` does not throw it out of its consumer group.

(A consumer that slept through the outage instead would be taken for dead by librdkafka once
``max.poll.interval.ms`` passed without a poll: it leaves the group, and joins again as a new
member with a new assignment - a rebalance of the whole group for every long outage.)

(Named to run after test_exactly_once.py: that test counts the first 50 events a fresh consumer
applies on the shared test topic, so it must find only its own there.)
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from kafka_roles import TOPIC, effects, make_consumer, prepare
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from test_exactly_once import count_on_topic, is_marker, wait_for

from crm.events.v1.probe_pb2 import Probe
from crm_events.envelope import encode, new_envelope
from crm_events.topics import dlq_name

pytestmark = pytest.mark.integration

MAX_POLL_INTERVAL_MS = 6000  # librdkafka's floor here: it must be >= session.timeout.ms (6 s)
OUTAGE_SECONDS = 2.5 * MAX_POLL_INTERVAL_MS / 1000


def group_members(bootstrap: str, group: str) -> list[str]:
    """The member ids in ``group`` now, as the broker's group coordinator knows them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    return sorted(member.member_id for member in description.members)


def test_a_database_outage_longer_than_the_poll_interval_causes_no_rebalance(own_postgres, bootstrap):
    db = prepare(own_postgres.create_database("backpressure"))
    marker = "b-" + uuid.uuid4().hex[:8]
    group = "g-" + marker
    producer = Producer({"bootstrap.servers": bootstrap})
    sequence = iter(range(1000))

    def produce(count: int) -> list[str]:
        ids = []
        for _ in range(count):
            seq = next(sequence)
            env = new_envelope("test.probed", "probe", f"agg-{seq % 3}", seq + 1, Probe(note=marker, sequence=seq))
            producer.produce(TOPIC, key=env.aggregate_id.encode(), value=encode(env))
            ids.append(env.event_id)
        producer.flush(10)
        return ids

    def applied() -> int:
        with db.transaction() as s:
            return s.execute(select(func.count()).select_from(effects).where(effects.c.marker == marker)).scalar_one()

    def retries() -> float:
        return REGISTRY.get_sample_value("crm_event_retries_total",
                                         {"service": "kit-tests", "consumer": group, "topic": TOPIC}) or 0.0

    consumer = make_consumer(db, bootstrap, group, marker, max_attempts=3, backoff=0.05,
                             **{"max.poll.interval.ms": MAX_POLL_INTERVAL_MS})
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        event_ids = produce(3)
        wait_for(lambda: applied() == 3, 60, "the events before the outage")
        members = group_members(bootstrap, group)
        assert len(members) == 1

        own_postgres.stop()
        event_ids += produce(12)
        wait_for(lambda: retries() > 0, 30, "the consumer to meet the outage")
        down_since = time.monotonic()
        time.sleep(OUTAGE_SECONDS)  # the outage itself: 2.5 poll intervals without a database
        own_postgres.start()
        outage = time.monotonic() - down_since
        wait_for(lambda: applied() == 15, 60, "the events from during the outage")
        assert thread.is_alive()
        # The same single member as before the outage: the consumer never left its group.
        assert group_members(bootstrap, group) == members
    finally:
        stop.set()
        thread.join(timeout=30)

    assert outage > 2 * MAX_POLL_INTERVAL_MS / 1000
    with db.transaction() as s:
        rows = s.execute(select(effects.c.event_id, effects.c.sequence).where(effects.c.marker == marker)
                         .order_by(effects.c.seq)).all()
    assert sorted(r.event_id for r in rows) == sorted(event_ids), "each event applied exactly once"
    for aggregate in range(3):  # in the order of their partition, per aggregate
        sequences = [r.sequence for r in rows if r.sequence % 3 == aggregate]
        assert sequences == sorted(sequences)
    ours = is_marker(marker)
    assert count_on_topic(bootstrap, dlq_name(TOPIC), lambda value, headers: dict(headers).get("dlq.consumer")
                          == group.encode() and ours(value, headers)) == 0
    db.dispose()


"""Outbox -> Kafka -> idempotent consumer on a real broker and real PostgreSQL, with real kills.

These are the reliability promises every service relies on:
- an event committed with a state change reaches Kafka, even if the relay dies (SIGKILL)
  between Kafka's confirmation and marking the row sent (it is then published twice);
- the consumer applies each event exactly once, even when it dies (SIGKILL) after its
  database commit and before its offset commit (Kafka then redelivers);
- a poison message goes to the DLQ with its origin and error, and the consumer goes on.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka_roles import TOPIC, effects, make_consumer, prepare
from sqlalchemy import func, select

from crm.events.v1.probe_pb2 import Probe
from crm_events.envelope import decode, encode, new_envelope
from crm_events.topics import dlq_name
from crm_kafka.clients import consumer_config, idempotent_producer
from crm_kafka.consumer import INBOX
from crm_kafka.outbox import OUTBOX, record_event
from crm_kafka.relay import OutboxRelay

pytestmark = pytest.mark.integration
ROLES = Path(__file__).parent / "kafka_roles.py"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def write_events(db, marker: str, count: int, per_tx: int = 100) -> list[str]:
    ids = []
    for start in range(0, count, per_tx):
        with db.transaction() as s:
            for seq in range(start, min(count, start + per_tx)):
                env = new_envelope("test.probed", "probe", f"agg-{seq % 7}", seq,
                                   Probe(note=marker, sequence=seq), producer="kit-tests")
                record_event(s, TOPIC, env)
                ids.append(env.event_id)
    return ids


def role(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROLES), *args], cwd=ROLES.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def count_on_topic(bootstrap: str, topic: str, accept: Callable[[bytes, list], bool]) -> int:
    """Read ``topic`` from the beginning to its current end; count messages ``accept`` likes."""
    consumer = Consumer(consumer_config(bootstrap, "reader-" + uuid.uuid4().hex, **{"enable.partition.eof": True}))
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
    consumer.assign(partitions)
    remaining, found = {tp.partition for tp in partitions}, 0
    deadline = time.monotonic() + 30
    while remaining and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
            continue
        if accept(msg.value(), msg.headers() or []):
            found += 1
    consumer.close()
    assert not remaining, "could not read the topic to its end"
    return found


def group_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        return _caught_up(consumer, topic)
    except KafkaException:  # e.g. NOT_COORDINATOR while the group moves: ask again
        return False
    finally:
        consumer.close()


def _caught_up(consumer: Consumer, topic: str) -> bool:
    metadata = consumer.list_topics(topic, timeout=10)
    tps = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    for tp in consumer.committed(tps, timeout=10):
        _low, high = consumer.get_watermark_offsets(tp, timeout=10)
        if high > 0 and tp.offset < high:
            return False
    return True


def is_marker(marker: str) -> Callable[[bytes, list], bool]:
    def accept(value: bytes, _headers: list) -> bool:
        try:
            return decode(value).probe.note == marker
        except ValueError:
            return False
    return accept


def test_each_event_applied_exactly_once_across_relay_and_consumer_kills(pg_url, postgres, bootstrap):
    source = prepare(pg_url)
    target_url = postgres.create_database("target_" + uuid.uuid4().hex[:8])
    target = prepare(target_url)
    marker, total = "m-" + uuid.uuid4().hex[:8], 300
    event_ids = write_events(source, marker, total)

    # 1. The relay publishes everything, then dies before marking anything sent.
    relay = role("relay", pg_url, bootstrap, "--exit-after-publish")
    assert relay.wait(timeout=60) == -9, relay.stderr.read()
    with source.transaction() as s:
        assert s.execute(select(func.count()).where(OUTBOX.c.sent_at.is_(None))).scalar_one() == total

    # 2. A new relay publishes them again and marks them sent.
    relay = role("relay", pg_url, bootstrap)
    try:
        def all_sent() -> bool:
            with source.transaction() as s:
                return s.execute(select(func.count()).where(OUTBOX.c.sent_at.is_(None))).scalar_one() == 0
        wait_for(all_sent, 60, "the outbox to drain")
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    published = count_on_topic(bootstrap, TOPIC, is_marker(marker))
    assert published == 2 * total, "the relay crash should have produced one duplicate of every event"

    # 3. A consumer applies 50 events, then dies before committing its offsets. It dies after
    # the commit of the batch with the 50th (a poll batch is at most 200 messages), so some were
    # left: those, and all it applied, come again.
    group = "g-" + marker
    consumer = role("consume", target_url, bootstrap, group, marker, "--exit-after", "50")
    assert consumer.wait(timeout=90) == -9, consumer.stderr.read()
    with target.transaction() as s:
        assert 50 <= s.execute(select(func.count()).select_from(effects)).scalar_one() < total

    # 4. A new consumer gets everything redelivered and finishes the job.
    consumer = role("consume", target_url, bootstrap, group, marker)
    try:
        wait_for(lambda: group_caught_up(bootstrap, group, TOPIC), 120, "the consumer group to catch up")
    finally:
        consumer.terminate()
        assert consumer.wait(timeout=30) == 0, consumer.stderr.read()

    with target.transaction() as s:
        rows = s.execute(select(effects.c.event_id, func.count()).group_by(effects.c.event_id)).all()
        inbox = s.execute(select(func.count()).select_from(INBOX).where(INBOX.c.consumer == group)).scalar_one()
    counts = dict(rows)
    assert set(counts) == set(event_ids), "an event was lost"
    assert max(counts.values()) == 1, "an event was applied twice"
    assert inbox == total
    source.dispose()
    target.dispose()


def test_poison_messages_go_to_the_dlq_and_the_consumer_goes_on(pg_url, bootstrap):
    db = prepare(pg_url)
    marker = "p-" + uuid.uuid4().hex[:8]
    group = "g-" + marker
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(TOPIC, key=b"garbage", value=b"\x00\xffnot an envelope")
    failing = new_envelope("test.probed", "probe", "agg-x", 1, Probe(note=marker + ":fail"))
    good = new_envelope("test.probed", "probe", "agg-y", 1, Probe(note=marker, sequence=1))
    for env in (failing, good):
        producer.produce(TOPIC, key=env.aggregate_id.encode(), value=encode(env))
    producer.flush(10)

    consumer = make_consumer(db, bootstrap, group, marker, fail_marker=marker + ":fail", max_attempts=3,
                             backoff=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        def good_applied() -> bool:
            with db.transaction() as s:
                return s.execute(select(effects.c.event_id).where(effects.c.marker == marker)).first() is not None
        wait_for(good_applied, 60, "the good event behind the poison ones")
        wait_for(lambda: group_caught_up(bootstrap, group, TOPIC), 60, "offsets past the poison messages")
    finally:
        stop.set()
        thread.join(timeout=30)

    dead: list[dict[str, str]] = []

    def ours(value: bytes, headers: list) -> bool:
        h = {k: v.decode() for k, v in headers}
        if h.get("dlq.consumer") == group:
            dead.append(h)
            return True
        return False

    assert count_on_topic(bootstrap, dlq_name(TOPIC), ours) == 2
    by_attempts = sorted(dead, key=lambda h: int(h["dlq.attempts"]))
    assert by_attempts[0]["dlq.attempts"] == "1" and "EnvelopeDecodeError" in by_attempts[0]["dlq.error"]
    assert by_attempts[1]["dlq.attempts"] == "3" and "always fails" in by_attempts[1]["dlq.error"]
    for h in dead:
        assert h["dlq.origin.topic"] == TOPIC and int(h["dlq.origin.offset"]) >= 0
    with db.transaction() as s:  # the failing event left no effect behind
        assert s.execute(select(func.count()).select_from(effects)).scalar_one() == 1
    db.dispose()


def test_relay_is_woken_by_the_commit_not_by_its_poll(any_db_url, bootstrap):
    """On PostgreSQL the relay LISTENs: with a 30 s fallback poll the event must still arrive
    at once (a generous 5 s bound, far from the 30 s the poll would take). On SQLite the
    short poll is the mechanism; the event must arrive all the same."""
    db = prepare(any_db_url)
    is_pg = any_db_url.startswith("postgresql")
    relay = OutboxRelay(db, lambda: idempotent_producer(bootstrap), "kit-tests",
                        poll_interval=30.0 if is_pg else 0.05)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    marker = "w-" + uuid.uuid4().hex[:8]
    reader = Consumer(consumer_config(bootstrap, "reader-" + marker, **{"auto.offset.reset": "latest"}))
    reader.subscribe([TOPIC])
    try:
        deadline = time.monotonic() + 15
        while not reader.assignment() and time.monotonic() < deadline:
            reader.poll(0.2)
        time.sleep(1.0)  # let the relay reach its LISTEN wait
        write_events(db, marker, 1)
        committed = time.monotonic()
        arrived = None
        while time.monotonic() - committed < 10 and arrived is None:
            msg = reader.poll(0.2)
            if msg is not None and not msg.error() and is_marker(marker)(msg.value(), []):
                arrived = time.monotonic() - committed
        assert arrived is not None and arrived < 5.0, f"event arrived after {arrived} s"
    finally:
        reader.close()
        stop.set()
        thread.join(timeout=30)
        db.dispose()


def run_consumer_until(db, bootstrap: str, group: str, marker: str, done: Callable[[], bool]) -> None:
    consumer = make_consumer(db, bootstrap, group, marker)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        wait_for(done, 60, f"consumer {group}")
    finally:
        stop.set()
        thread.join(timeout=30)


def test_a_fresh_database_replays_the_topic_from_offset_zero(postgres, pg_url, bootstrap):
    """The database, not the consumer group, says where to start: a read model rebuilt on an
    empty database gets every event again, though its group committed offsets at the end."""
    marker = "r-" + uuid.uuid4().hex[:8]
    group = "g-" + marker
    producer = Producer({"bootstrap.servers": bootstrap})
    for seq in range(5):
        env = new_envelope("test.probed", "probe", f"agg-{seq}", 1, Probe(note=marker, sequence=seq))
        producer.produce(TOPIC, key=env.aggregate_id.encode(), value=encode(env))
    producer.flush(10)

    def effects_in(db) -> int:
        with db.transaction() as s:
            return s.execute(select(func.count()).select_from(effects).where(effects.c.marker == marker)).scalar_one()

    first = prepare(pg_url)
    run_consumer_until(first, bootstrap, group, marker,
                       lambda: effects_in(first) == 5 and group_caught_up(bootstrap, group, TOPIC))
    # Same group, same database: nothing again (given time to do wrong: one more full pass).
    before = time.monotonic()
    run_consumer_until(first, bootstrap, group, marker, lambda: time.monotonic() - before > 5)
    assert effects_in(first) == 5
    # Same group, empty database: everything again.
    fresh = prepare(postgres.create_database("fresh_" + uuid.uuid4().hex[:8]))
    run_consumer_until(fresh, bootstrap, group, marker, lambda: effects_in(fresh) == 5)
    first.dispose()
    fresh.dispose()


def test_the_consumer_outlives_a_database_outage_and_dead_letters_nothing(own_postgres, bootstrap):
    """A database that is away for longer than the retries of a failing event last is not a
    poison message: the consumer waits for it, also when it is away as the consumer joins its
    group, and applies every event once."""
    db = prepare(own_postgres.create_database("outage"))
    marker = "o-" + uuid.uuid4().hex[:8]
    group = "g-" + marker
    producer = Producer({"bootstrap.servers": bootstrap})

    def produce(first: int, count: int) -> None:
        for seq in range(first, first + count):
            env = new_envelope("test.probed", "probe", f"agg-{seq % 5}", 1, Probe(note=marker, sequence=seq))
            producer.produce(TOPIC, key=env.aggregate_id.encode(), value=encode(env))
        producer.flush(10)

    def applied() -> int:
        with db.transaction() as s:
            return s.execute(select(func.count()).select_from(effects).where(effects.c.marker == marker)).scalar_one()

    produce(0, 20)
    own_postgres.stop()  # away as the consumer starts and is assigned its partitions
    # Three attempts 10 ms apart: without waiting for the database, each event would be dead-lettered at once.
    consumer = make_consumer(db, bootstrap, group, marker, max_attempts=3, backoff=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        time.sleep(8)  # the group is joined (session.timeout.ms 6 s at most) while the database is away
        own_postgres.start()
        wait_for(lambda: applied() == 20, 60, "the events from before the outage")
        own_postgres.stop()  # away again, while events arrive
        produce(20, 20)
        time.sleep(3)
        own_postgres.start()
        wait_for(lambda: applied() == 40, 60, "the events from during the outage")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=30)
    with db.transaction() as s:
        rows = s.execute(select(effects.c.event_id).where(effects.c.marker == marker)).scalars().all()
    assert len(rows) == len(set(rows)) == 40
    # (The topic also holds other tests' poison messages, which this group dead-letters too.)
    ours = is_marker(marker)
    assert count_on_topic(bootstrap, dlq_name(TOPIC), lambda value, headers: dict(headers).get("dlq.consumer")
                          == group.encode() and ours(value, headers)) == 0
    db.dispose()

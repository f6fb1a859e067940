"""The idempotent consumer applies the messages of one poll batch in one transaction: one inbox
read, the handlers in order, one multi-row inbox insert, one offset per partition, one commit.
Anything going wrong in it sends the batch the one-message-at-a-time way, which retries,
dead-letters and keeps the order as it always did.

Each test has topics of its own (with their DLQ), produced to before its consumer starts, so
what arrives together is known.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_roles import effects, prepare
from prometheus_client import REGISTRY
from sqlalchemy import event, func, select
from test_exactly_once import count_on_topic, group_caught_up, wait_for

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.probe_pb2 import Probe
from crm_events.envelope import encode, new_envelope
from crm_events.topics import dlq_name
from crm_kafka.clients import consumer_config, idempotent_producer
from crm_kafka.consumer import INBOX, OFFSETS, Dispatch, IdempotentConsumer
from crm_kit.db import Database, utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def new_topic(bootstrap: str) -> Callable[[int], str]:
    """Makes a topic of this test's own with ``partitions`` partitions, and its DLQ."""
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def make(partitions: int) -> str:
        name = f"crm.test.batch-{uuid.uuid4().hex[:8]}"
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1),
                                       NewTopic(dlq_name(name), num_partitions=1, replication_factor=1)])
        for future in futures.values():
            future.result(timeout=30)
        return name

    return make


def produce(bootstrap: str, topic: str, envelopes: list[Envelope]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for env in envelopes:
        producer.produce(topic, key=env.aggregate_id.encode(), value=encode(env))
    assert producer.flush(10) == 0


def probes(marker: str, count: int, aggregates: int = 1) -> list[Envelope]:
    """Events 1..count (their ``sequence``), over ``aggregates`` keys."""
    return [new_envelope("test.probed", "probe", f"agg-{seq % aggregates}", seq, Probe(note=marker, sequence=seq),
                         producer="kit-tests") for seq in range(1, count + 1)]


def recording(fails: Callable[[Envelope], bool] = lambda _env: False) -> Callable[[Any, Envelope], None]:
    """One effect row per event (its sequence), unless ``fails`` says this call raises."""

    def handle(session: Any, envelope: Envelope) -> None:
        if fails(envelope):
            raise RuntimeError(f"event {envelope.probe.sequence} fails")
        session.execute(effects.insert().values(event_id=envelope.event_id, marker=envelope.probe.note,
                                                sequence=envelope.probe.sequence))

    return handle


def inbox_transactions(db: Database) -> list[int]:
    """For each transaction committed on ``db`` that wrote inbox rows: how many inbox INSERTs it ran."""
    committed: list[int] = []

    def begin(conn: Any) -> None:
        conn.info["inbox_inserts"] = 0

    def before_execute(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO INBOX"):
            conn.info["inbox_inserts"] = conn.info.get("inbox_inserts", 0) + 1

    def commit(conn: Any) -> None:
        if conn.info.get("inbox_inserts"):
            committed.append(conn.info["inbox_inserts"])

    event.listen(db.engine, "begin", begin)
    event.listen(db.engine, "before_cursor_execute", before_execute)
    event.listen(db.engine, "commit", commit)
    return committed


@contextmanager
def running(consumer: IdempotentConsumer) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the consumer did not stop"


def consume_until_caught_up(consumer: IdempotentConsumer, bootstrap: str, done: Callable[[], bool]) -> None:
    with running(consumer):
        wait_for(done, 60, f"consumer {consumer.name}")
        wait_for(lambda: group_caught_up(bootstrap, consumer.name, consumer.topics[0]), 60,
                 f"{consumer.name}'s offsets in Kafka")


def new_consumer(db: Database, bootstrap: str, topic: str, handler: Callable[[Any, Envelope], None],
                 **options: Any) -> IdempotentConsumer:
    group = "g-" + uuid.uuid4().hex[:8]
    return IdempotentConsumer(group, [topic], handler, db, consumer_config(bootstrap, group),
                              lambda: idempotent_producer(bootstrap), "kit-tests", **options)


def applied_sequences(db: Database, marker: str) -> list[int]:
    """The sequences of ``marker``'s effects, in the order they were written."""
    with db.transaction() as s:
        return list(s.execute(select(effects.c.sequence).where(effects.c.marker == marker)
                              .order_by(effects.c.seq)).scalars())


def consumed(consumer: IdempotentConsumer, result: str) -> float:
    return REGISTRY.get_sample_value("crm_events_consumed_total", {
        "service": "kit-tests", "consumer": consumer.name, "topic": consumer.topics[0], "result": result}) or 0.0


@pytest.mark.parametrize("partitions", [1, 3])
def test_events_that_arrive_together_are_applied_in_one_transaction(pg_url, bootstrap, new_topic, partitions):
    db = prepare(pg_url)
    topic, marker, total = new_topic(partitions), "t-" + uuid.uuid4().hex[:8], 30
    produce(bootstrap, topic, probes(marker, total, aggregates=7))
    transactions = inbox_transactions(db)
    consumer = new_consumer(db, bootstrap, topic, recording())

    consume_until_caught_up(consumer, bootstrap, lambda: len(applied_sequences(db, marker)) == total)

    # One partition's messages come in one fetch: one transaction with one inbox INSERT.
    # With three, the poll may hand over the partitions' messages one after the other.
    if partitions == 1:
        assert transactions == [1]
    else:
        assert 1 <= len(transactions) <= partitions and all(inserts == 1 for inserts in transactions)
    assert sorted(applied_sequences(db, marker)) == list(range(1, total + 1))
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(INBOX).where(INBOX.c.consumer == consumer.name)
                         ).scalar_one() == total
        stored = dict(s.execute(select(OFFSETS.c.partition, OFFSETS.c.next_offset)
                                .where(OFFSETS.c.consumer == consumer.name, OFFSETS.c.topic == topic)).all())
    reader = Consumer(consumer_config(bootstrap, consumer.name))
    try:  # each partition's next offset, in the database and in Kafka, is its end
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        committed = {tp.partition: tp.offset for tp in
                     reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)}
    finally:
        reader.close()
    assert stored == {p: end for p, end in ends.items() if end > 0}
    assert {p: committed[p] for p in stored} == stored
    assert consumed(consumer, "applied") == total and consumed(consumer, "duplicate") == 0
    db.dispose()


def test_duplicates_in_a_batch_are_skipped_and_the_rest_applied(any_db_url, bootstrap, new_topic):
    db = prepare(any_db_url)
    topic, marker = new_topic(1), "d-" + uuid.uuid4().hex[:8]
    events = probes(marker, 6)
    done_before = events[1]  # event 2: in the inbox already
    # Event 4 twice in the batch (a relay that published it again), and event 2 once more.
    produce(bootstrap, topic, [*events[:4], events[3], *events[4:], done_before])
    consumer = new_consumer(db, bootstrap, topic, recording())
    with db.transaction() as s:
        s.execute(INBOX.insert().values(consumer=consumer.name, event_id=done_before.event_id, topic=topic,
                                        processed_at=utcnow()))
    transactions = inbox_transactions(db)

    consume_until_caught_up(consumer, bootstrap, lambda: len(applied_sequences(db, marker)) == 5)

    assert applied_sequences(db, marker) == [1, 3, 4, 5, 6]
    assert transactions == [1]
    assert consumed(consumer, "applied") == 5 and consumed(consumer, "duplicate") == 3
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(INBOX).where(INBOX.c.consumer == consumer.name)
                         ).scalar_one() == 6
    db.dispose()


@pytest.mark.parametrize("batches", [True, False], ids=["batch", "one-by-one"])
def test_types_a_dispatch_does_not_handle_leave_no_inbox_row_and_their_offsets_advance(pg_url, bootstrap, new_topic,
                                                                                        batches):
    db = prepare(pg_url)
    topic, marker = new_topic(1), "i-" + uuid.uuid4().hex[:8]
    events = probes(marker, 6)
    for env in events[::2]:  # events 1, 3 and 5 are of a type this consumer does not handle
        env.event_type = "test.other"
    produce(bootstrap, topic, events)
    consumer = new_consumer(db, bootstrap, topic, Dispatch({"test.probed": recording()}),
                            batch_transactions=batches)

    consume_until_caught_up(consumer, bootstrap, lambda: consumed(consumer, "ignored") == 3)

    assert applied_sequences(db, marker) == [2, 4, 6]
    assert consumed(consumer, "applied") == 3 and consumed(consumer, "duplicate") == 0
    with db.transaction() as s:
        inbox = set(s.execute(select(INBOX.c.event_id).where(INBOX.c.consumer == consumer.name)).scalars())
        stored = s.execute(select(OFFSETS.c.next_offset).where(OFFSETS.c.consumer == consumer.name)).scalar_one()
    assert inbox == {e.event_id for e in events[1::2]}
    assert stored == 6  # past the last one, which was ignored
    db.dispose()


@pytest.mark.parametrize("failures", [2, None], ids=["fails-twice", "always-fails"])
def test_a_failing_event_in_a_batch_is_retried_or_dead_lettered_and_the_order_kept(pg_url, bootstrap, new_topic,
                                                                                  failures):
    """The 3rd event fails: the batch's transaction is rolled back and its messages go one by
    one - events 1-2 are applied once, the 3rd is retried (its first failure was the batch's)
    and applied, or dead-lettered after its attempts, and the ones after it are applied once,
    in their order."""
    db = prepare(pg_url)
    topic, marker = new_topic(1), "f-" + uuid.uuid4().hex[:8]
    events = probes(marker, 6)
    produce(bootstrap, topic, events)
    calls = {"3": 0}

    def fails(envelope: Envelope) -> bool:
        if envelope.probe.sequence != 3:
            return False
        calls["3"] += 1
        return failures is None or calls["3"] <= failures

    consumer = new_consumer(db, bootstrap, topic, recording(fails), max_attempts=3, backoff=0.01)
    expected = [1, 2, 3, 4, 5, 6] if failures else [1, 2, 4, 5, 6]

    consume_until_caught_up(consumer, bootstrap, lambda: len(applied_sequences(db, marker)) == len(expected))

    assert applied_sequences(db, marker) == expected, "each event once, in its order"
    dead: list[dict[str, str]] = []

    def ours(_value: bytes, headers: list) -> bool:
        h = {k: v.decode() for k, v in headers}
        dead.append(h)
        return True

    assert count_on_topic(bootstrap, dlq_name(topic), ours) == (0 if failures else 1)
    if failures is None:
        assert dead[0]["dlq.attempts"] == "3" and "event 3 fails" in dead[0]["dlq.error"]
        assert dead[0]["dlq.origin.offset"] == "2"
        assert consumed(consumer, "dead_lettered") == 1
        assert calls["3"] == 1 + 3, "the batch's try, then its own three attempts"
    else:
        assert calls["3"] == 3, "the batch's try, a failed attempt of its own, a retry that worked"
    assert consumed(consumer, "applied") == len(expected)
    db.dispose()


@pytest.mark.parametrize("options", [{"batch_size": 1}, {"batch_transactions": False}],
                         ids=["batch-of-one", "batches-off"])
def test_alone_each_event_has_a_transaction_of_its_own(pg_url, bootstrap, new_topic, options):
    db = prepare(pg_url)
    topic, marker = new_topic(1), "s-" + uuid.uuid4().hex[:8]
    produce(bootstrap, topic, probes(marker, 5))
    transactions = inbox_transactions(db)
    consumer = new_consumer(db, bootstrap, topic, recording(), **options)

    consume_until_caught_up(consumer, bootstrap, lambda: len(applied_sequences(db, marker)) == 5)

    assert applied_sequences(db, marker) == [1, 2, 3, 4, 5]
    assert transactions == [1] * 5
    db.dispose()


class Gathering:
    """A handler that batches its writes: ``__call__`` gathers, ``finish`` writes them all in one
    statement (failing the first ``fail_first`` times it is called)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.finishes: list[list[int]] = []  # the sequences each finish wrote
        self.fail_first = fail_first

    def __call__(self, session: Any, envelope: Envelope) -> None:
        session.info.setdefault("gathered", []).append(envelope)

    def finish(self, session: Any) -> None:
        gathered = session.info.pop("gathered", [])
        if self.fail_first > 0:
            self.fail_first -= 1
            raise RuntimeError("finish fails")
        session.execute(effects.insert(), [{"event_id": e.event_id, "marker": e.probe.note,
                                            "sequence": e.probe.sequence} for e in gathered])
        self.finishes.append([e.probe.sequence for e in gathered])


def test_a_handler_that_gathers_writes_a_batch_once_in_its_transaction(any_db_url, bootstrap, new_topic):
    db = prepare(any_db_url)
    topic, marker, total = new_topic(1), "g-" + uuid.uuid4().hex[:8], 12
    produce(bootstrap, topic, probes(marker, total))
    handler = Gathering()
    transactions = inbox_transactions(db)

    consume_until_caught_up(new_consumer(db, bootstrap, topic, handler), bootstrap,
                            lambda: len(applied_sequences(db, marker)) == total)

    assert handler.finishes == [list(range(1, total + 1))] and transactions == [1]
    db.dispose()


def test_a_failing_finish_sends_the_batch_one_by_one_and_nothing_is_written_twice(any_db_url, bootstrap, new_topic):
    db = prepare(any_db_url)
    topic, marker, total = new_topic(1), "f-" + uuid.uuid4().hex[:8], 5
    produce(bootstrap, topic, probes(marker, total))
    handler = Gathering(fail_first=1)  # the batch's finish fails: its transaction is rolled back

    consume_until_caught_up(new_consumer(db, bootstrap, topic, handler), bootstrap,
                            lambda: len(applied_sequences(db, marker)) == total)

    assert handler.finishes == [[n] for n in range(1, total + 1)]  # then each event with its own finish
    assert applied_sequences(db, marker) == list(range(1, total + 1))
    db.dispose()

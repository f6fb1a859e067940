"""What the bench reads from Kafka and the services' databases.

- ``raw_round_trips``: the baseline of every event-driven figure, one confluent-kafka
  produce -> consume round trip at a time on the platform's broker, with the platform's own
  producer and consumer settings;
- ``EventClock``: notes when each event of a topic reaches a consumer (by its ``event_id``
  header), to time the outbox;
- ``Backlog``: consumer-group lag (the offsets each database keeps against the partitions' ends)
  and undelivered outbox rows, to time a catch-up, and each group's position over it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from crm_devstack.errors import DevstackError
from crm_kafka.clients import consumer_config, idempotent_producer

ROUND_TRIP_TOPIC = "bench.round-trip"
BENCH_GROUP_PREFIX = "bench-"


def _assign_at_end(consumer: Consumer, topic: str, timeout: float = 30) -> None:
    """Assign every partition of ``topic`` from its current end, resolved now (not lazily)."""
    metadata = consumer.list_topics(topic, timeout=timeout)
    partitions = metadata.topics[topic].partitions
    if not partitions:
        raise DevstackError(f"topic {topic} has no partitions (does it exist?)")
    assignment = []
    for p in partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        assignment.append(TopicPartition(topic, p, high))
    consumer.assign(assignment)


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(consumer_config(bootstrap, f"{BENCH_GROUP_PREFIX}{uuid.uuid4().hex[:8]}"))


def raw_round_trips(bootstrap: str, samples: int, *, warmup: int = 5, timeout: float = 10) -> list[float]:
    """Seconds from ``produce()`` to the consumer holding the message, one message at a time."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if ROUND_TRIP_TOPIC not in admin.list_topics(timeout=timeout).topics:
        futures = admin.create_topics([NewTopic(ROUND_TRIP_TOPIC, num_partitions=1, replication_factor=1)])
        for future in futures.values():
            future.result(timeout=timeout)
    producer = idempotent_producer(bootstrap)
    consumer = _consumer(bootstrap)
    try:
        _assign_at_end(consumer, ROUND_TRIP_TOPIC)
        times: list[float] = []
        for n in range(warmup + samples):
            key = uuid.uuid4().hex.encode()
            began = time.perf_counter()
            producer.produce(ROUND_TRIP_TOPIC, key=key, value=b"x" * 600)
            producer.poll(0)
            deadline = began + timeout
            while True:
                msg = consumer.poll(0.5)
                producer.poll(0)  # serve delivery reports
                if msg is not None and msg.error() is None and msg.key() == key:
                    break
                if time.perf_counter() > deadline:
                    raise DevstackError(f"a message produced to {ROUND_TRIP_TOPIC} did not come back in {timeout} s")
            if n >= warmup:
                times.append(time.perf_counter() - began)
        return times
    finally:
        consumer.close()
        producer.flush(10)


class EventClock:
    """Consumes a topic from its current end in a thread, noting the wall-clock time
    (``time.time()``, the clock the services stamp outbox rows with) each ``event_id`` arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.seen: dict[str, float] = {}
        self._consumer = _consumer(bootstrap)
        _assign_at_end(self._consumer, topic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-event-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # poll(), not consume(n, timeout): consume waits out its whole timeout unless n
            # messages arrive, which would add up to that timeout to every measurement.
            msg = self._consumer.poll(0.2)
            arrived = time.time()
            if msg is None or msg.error() is not None:
                continue
            event_id = dict(msg.headers() or []).get("event_id")
            if isinstance(event_id, bytes):
                self.seen.setdefault(event_id.decode(), arrived)

    def wait_for(self, event_ids: Iterable[str], timeout: float) -> None:
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout
        while not wanted <= self.seen.keys():
            if time.monotonic() > deadline:
                missing = len(wanted - self.seen.keys())
                raise DevstackError(f"{missing} of {len(wanted)} events did not reach Kafka within {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@dataclass(frozen=True)
class BacklogState:
    lag: int  # messages behind, summed over every group and partition it is assigned
    outbox: int  # outbox rows not yet delivered, over every service
    groups_ready: bool  # every expected consumer group has members with assignments
    ends: int  # sum of the partitions' end offsets: unchanged means nothing new was published
    group_lag: Mapping[str, int] = field(default_factory=dict)  # per group with an assignment
    positions: Mapping[str, int] = field(default_factory=dict)  # per group: its next offsets summed (database)

    @property
    def drained(self) -> bool:
        return self.groups_ready and self.lag == 0 and self.outbox == 0


class Backlog:
    """Lag of the platform's consumer groups and the outbox backlog of its databases."""

    def __init__(self, bootstrap: str, dsns: Mapping[str, str]) -> None:
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.dsns = dict(dsns)  # by service name
        self.services = set(self.dsns)

    def groups(self, timeout: float = 10) -> list[str]:
        """The platform's consumer groups: ``<service>.<consumer>`` with members now (a broker
        shared with other tests also holds their groups, long left)."""
        listed = self.admin.list_consumer_groups(request_timeout=timeout,
                                                 states={ConsumerGroupState.STABLE}).result(timeout)
        return sorted(g.group_id for g in listed.valid if g.group_id.split(".", 1)[0] in self.services)

    def _query(self, sql: str) -> dict[str, list[tuple[Any, ...]]]:
        rows = {}
        for service, dsn in self.dsns.items():
            with psycopg.connect(dsn) as conn:
                rows[service] = conn.execute(sql).fetchall()
        return rows

    def outbox(self) -> int:
        """Outbox rows not yet delivered, over every service."""
        found = self._query("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return sum(int(rows[0][0]) for rows in found.values() if rows)

    def group_positions(self, groups: Iterable[str]) -> dict[str, int]:
        """Each group's position as its database says, its next offsets summed over partitions
        (also for groups with no members, while the workers are stopped)."""
        at = dict.fromkeys(groups, 0)
        for (group, _topic, _partition), position in self.positions().items():
            if group in at:
                at[group] += position
        return at

    def positions(self) -> dict[tuple[str, str, int], int]:
        """Where each consumer is, as its database says: the partition's next offset, written in
        the transaction of the last event's effect (Kafka's committed offsets may lag behind)."""
        found = self._query("SELECT consumer, topic, partition, next_offset FROM consumer_offsets")
        return {(str(c), str(t), int(p)): int(n) for rows in found.values() for c, t, p, n in rows}

    def state(self, groups: list[str], timeout: float = 10) -> BacklogState:
        """Lag first, then the outbox: an effect commits (with its outbox rows and its offset) in
        one transaction, so rows behind a zero lag are already in the outbox count."""
        lag, ready = 0, True
        assigned: set[tuple[str, int]] = set()
        described = self.admin.describe_consumer_groups(groups, request_timeout=timeout)
        per_group: dict[str, list[TopicPartition]] = {}
        for group, future in described.items():
            try:
                description = future.result(timeout)
            except KafkaException:
                ready = False
                continue
            partitions = [tp for m in description.members for tp in m.assignment.topic_partitions]
            if not partitions:
                ready = False
            per_group[group] = partitions
            assigned.update((tp.topic, tp.partition) for tp in partitions)
        ends = self._offsets(assigned, OffsetSpec.latest(), timeout)
        starts = self._offsets(assigned, OffsetSpec.earliest(), timeout)
        positions = self.positions()
        group_lag: dict[str, int] = {}
        for group, partitions in per_group.items():
            for tp in partitions:
                key = (tp.topic, tp.partition)
                position = positions.get((group, *key), starts[key])
                group_lag[group] = group_lag.get(group, 0) + max(0, ends[key] - position)
        lag = sum(group_lag.values())
        at: dict[str, int] = {}
        for (group, _topic, _partition), position in positions.items():
            at[group] = at.get(group, 0) + position
        return BacklogState(lag=lag, outbox=self.outbox(), groups_ready=ready and bool(per_group),
                            ends=sum(ends.values()), group_lag=group_lag, positions=at)

    def _offsets(self, partitions: set[tuple[str, int]], spec: OffsetSpec, timeout: float) -> dict[tuple[str, int],
                                                                                                    int]:
        if not partitions:
            return {}
        futures = self.admin.list_offsets({TopicPartition(t, p): spec for t, p in partitions},
                                          request_timeout=timeout)
        return {(tp.topic, tp.partition): future.result(timeout).offset for tp, future in futures.items()}

    def wait_drained(self, groups: list[str], timeout: float, interval: float = 0.25,
                     history: list[tuple[float, BacklogState]] | None = None) -> float:
        """Seconds (monotonic clock) at which the backlog was first seen empty, confirmed by a
        second look ``interval`` later with nothing published in between. Every look is added to
        ``history`` (when given) with the time it was taken."""
        deadline = time.monotonic() + timeout
        first_empty: tuple[float, BacklogState] | None = None
        last: BacklogState | None = None
        while time.monotonic() < deadline:
            seen_at = time.monotonic()
            try:
                last = self.state(groups)
            except (KafkaException, psycopg.Error) as exc:
                last, first_empty = None, None
                print(f"      (backlog check failed, retrying: {exc})", flush=True)
                time.sleep(interval)
                continue
            if history is not None:
                history.append((seen_at, last))
            if last.drained:
                if first_empty is not None and first_empty[1].ends == last.ends:
                    return first_empty[0]
                first_empty = (seen_at, last)
            else:
                first_empty = None
            time.sleep(interval)
        raise DevstackError(f"the backlog did not drain within {timeout:g} s (last seen: {last})")

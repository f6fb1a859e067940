"""How fast one idempotent consumer drains a backlog: ``python -m crm_devstack.bench.consumer_drain``.

On a throwaway PostgreSQL and Kafka of its own: produce ``--events`` envelopes to a topic, then
let one ``IdempotentConsumer`` with a trivial handler (one INSERT per event) drain them, once
with one transaction per event and once with one transaction per poll batch, each on a fresh
database and consumer group, in the same run. Prints events/s, the consumer process's CPU
per event (its own threads and librdkafka's; PostgreSQL's is not in it) and commits per event.

The clocks run from the first applied event to the last (``_after_apply``), so joining the
consumer group is not counted. On a shared machine the CPU per event is the steadier figure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, String, Table, event

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.probe_pb2 import Probe
from crm_devstack.arguments import positive
from crm_devstack.bench.runner import _kafka_cache, say
from crm_devstack.kafka import KafkaBroker, ensure_kafka_jars
from crm_devstack.postgres import PostgresCluster
from crm_events.envelope import encode, new_envelope
from crm_events.topics import PROBES
from crm_kafka.clients import consumer_config, idempotent_producer
from crm_kafka.consumer import IdempotentConsumer
from crm_kafka.topics import ensure_topics
from crm_kit.db import Database, new_metadata

MODES = {"per-event": False, "per-batch": True}  # name -> IdempotentConsumer(batch_transactions=...)


@dataclass(frozen=True)
class Drain:
    mode: str
    events: int  # applied while the clock ran
    seconds: float
    cpu_seconds: float  # this process's CPU time meanwhile
    commits: int  # database COMMITs while the clock ran

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_event(self) -> float:
        return 1000 * self.cpu_seconds / max(self.events, 1)


class _TimedConsumer(IdempotentConsumer):
    """Notes when the first and the last of ``expected`` events were applied."""

    expected = 0
    first: tuple[float, float, int] | None = None  # wall clock, CPU clock, applied
    last: tuple[float, float] | None = None
    done = threading.Event()

    def _after_apply(self, envelope: Envelope) -> None:
        if self.first is None:
            self.first = (time.perf_counter(), time.process_time(), self.applied)
        if self.applied >= self.expected:
            self.last = (time.perf_counter(), time.process_time())
            self.done.set()


def produce(bootstrap: str, count: int) -> None:
    """``count`` probe envelopes on the probe topic, keyed by 50 aggregates (all partitions)."""
    producer = idempotent_producer(bootstrap)
    for seq in range(count):
        env = new_envelope("test.probed", "probe", f"agg-{seq % 50}", seq + 1, Probe(note="drain", sequence=seq),
                           producer="bench")
        producer.produce(PROBES, key=env.aggregate_id.encode(), value=encode(env))
        if seq % 1000 == 999:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the broker did not confirm every event")


def drain(mode: str, postgres: PostgresCluster, bootstrap: str, count: int, timeout: float = 600,
          **consumer_options: Any) -> Drain:
    """Drain the probe topic's ``count`` events into a fresh database with a fresh group."""
    name = f"drain_{mode.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    metadata = new_metadata()
    effects = Table("effects", metadata, Column("seq", Integer, primary_key=True, autoincrement=True),
                    Column("event_id", String(36)), Column("sequence", Integer))
    db = Database(postgres.create_database(name))
    metadata.create_all(db.engine)
    commits = [0]
    event.listen(db.engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))

    def handle(session: Any, envelope: Envelope) -> None:
        session.execute(effects.insert().values(event_id=envelope.event_id, sequence=envelope.probe.sequence))

    consumer = _TimedConsumer(name, [PROBES], handle, db, consumer_config(bootstrap, name),
                              lambda: idempotent_producer(bootstrap), "bench", **consumer_options)
    consumer.expected, consumer.done = count, threading.Event()
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), name=name)
    commits_at_first = None
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not consumer.done.wait(0.01):
            if commits_at_first is None and consumer.first is not None:
                commits_at_first = commits[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: {consumer.applied} of {count} events applied after {timeout} s")
        commits_at_last = commits[0]
    finally:
        stop.set()
        thread.join(timeout=60)
        db.dispose()
    assert consumer.first is not None and consumer.last is not None
    (started, cpu_started, applied_then), (ended, cpu_ended) = consumer.first, consumer.last
    return Drain(mode, count - applied_then, ended - started, cpu_ended - cpu_started,
                 commits_at_last - (commits_at_first if commits_at_first is not None else 0))


def run(count: int, modes: Sequence[str], rounds: int) -> list[Drain]:
    pg_dir = Path(tempfile.mkdtemp(prefix="crm-drain-pg-"))
    kafka_dir = Path(tempfile.mkdtemp(prefix="crm-drain-kafka-"))
    postgres = PostgresCluster(pg_dir)
    kafka = KafkaBroker(kafka_dir, ensure_kafka_jars(_kafka_cache()))
    try:
        say("starting PostgreSQL and Kafka")
        postgres.start()
        kafka.start(timeout=120)
        ensure_topics(kafka.bootstrap, [PROBES])
        say(f"producing {count} events")
        produce(kafka.bootstrap, count)
        results = []
        for round_ in range(rounds):
            for mode in modes:
                result = drain(mode, postgres, kafka.bootstrap, count, batch_transactions=MODES[mode])
                say(f"round {round_ + 1}, {mode}: {result.events} events in {result.seconds:.2f} s = "
                    f"{result.per_second:,.0f} events/s, {result.cpu_ms_per_event:.2f} ms CPU and "
                    f"{result.commits / max(result.events, 1):.3f} commits per event")
                results.append(result)
        return results
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(kafka_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_devstack.bench.consumer_drain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=positive(int, "--events"), default=5000)
    parser.add_argument("--rounds", type=positive(int, "--rounds"), default=2,
                        help="times each mode drains the topic (alternating), default 2")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    args = parser.parse_args(argv)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    results = run(args.events, modes, args.rounds)
    print(f"\n{'mode':<10} {'events/s (best)':>16} {'each round':>24} {'CPU ms/event (best)':>20} "
          f"{'commits/event':>14}")
    for mode in modes:
        mine = [r for r in results if r.mode == mode]
        rates = ", ".join(f"{r.per_second:,.0f}" for r in mine)
        best = max(r.per_second for r in mine)
        cpu = min(r.cpu_ms_per_event for r in mine)
        print(f"{mode:<10} {best:>16,.0f} {rates:>24} {cpu:>20.2f} {mine[-1].commits / max(mine[-1].events, 1):>14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

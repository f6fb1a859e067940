"""The relay and a consumer as separate processes, so tests can SIGKILL them for real.

    python kafka_roles.py relay <db_url> <bootstrap> [--exit-after-publish]
    python kafka_roles.py consume <db_url> <bootstrap> <group> <marker> [--exit-after N]

The faults are the chaos tooling's own crashing components (``crm_devstack.chaos.faulty_worker``,
exactly as `make chaos` runs them): ``--exit-after-publish`` runs a relay that SIGKILLs itself
after Kafka confirmed its first batch, before marking it sent; ``--exit-after N`` a consumer that
SIGKILLs itself once N events are applied, before their offsets are committed to Kafka.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table

from crm.events.v1.envelope_pb2 import Envelope
from crm_devstack.chaos.crashing import CrashingConsumer, CrashingRelay
from crm_events.envelope import payload_of
from crm_kafka.clients import consumer_config, idempotent_producer
from crm_kafka.consumer import IdempotentConsumer
from crm_kafka.relay import OutboxRelay
from crm_kit.db import Database
from crm_kit.migrations import upgrade

VERSIONS = Path(__file__).parent / "test_versions"
TOPIC = "crm.test.v1"

effects = Table(
    "effects", MetaData(),
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36)),
    Column("marker", String(100)),
    Column("sequence", Integer),
)


def prepare(db_url: str) -> Database:
    """Migrate a test database (kit tables + effects) and open it."""
    upgrade(db_url, VERSIONS)
    return Database(db_url)


def effect_handler(marker: str, fail_marker: str | None = None):
    """Record one effect row per event of this test; events of other tests are ignored."""

    def handle(session, envelope: Envelope) -> None:
        probe = payload_of(envelope)
        if probe is None or not probe.note.startswith(marker):
            return
        if fail_marker and probe.note == fail_marker:
            raise RuntimeError("this event always fails (poison)")
        session.execute(effects.insert().values(event_id=envelope.event_id, marker=marker,
                                                sequence=probe.sequence))

    return handle


def make_consumer(db: Database, bootstrap: str, group: str, marker: str, fail_marker: str | None = None,
                  max_attempts: int = 4, backoff: float = 0.05, *, exit_after: int = 0,
                  **config: object) -> IdempotentConsumer:
    """The test consumer; ``exit_after`` > 0 makes it the chaos tooling's crashing one, ``config``
    overrides librdkafka settings."""
    args = (group, [TOPIC], effect_handler(marker, fail_marker), db, consumer_config(bootstrap, group, **config),
            lambda: idempotent_producer(bootstrap), "kit-tests")
    if exit_after > 0:
        return CrashingConsumer(*args, max_attempts=max_attempts, backoff=backoff, exit_after=exit_after)
    return IdempotentConsumer(*args, max_attempts=max_attempts, backoff=backoff)


def _run_until_signal(target) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    target(stop)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "consume"])
    parser.add_argument("db_url")
    parser.add_argument("bootstrap")
    parser.add_argument("group", nargs="?")
    parser.add_argument("marker", nargs="?")
    parser.add_argument("--exit-after-publish", action="store_true")
    parser.add_argument("--exit-after", type=int, default=0)
    args = parser.parse_args(argv)
    db = Database(args.db_url)
    if args.role == "relay":
        relay_type = CrashingRelay if args.exit_after_publish else OutboxRelay
        relay = relay_type(db, lambda: idempotent_producer(args.bootstrap), "kit-tests", poll_interval=0.05)
        _run_until_signal(relay.run)
    else:
        _run_until_signal(make_consumer(db, args.bootstrap, args.group, args.marker, exit_after=args.exit_after).run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The relay and a consumer as separate processes, so tests can SIGKILL them for real.

    python kafka_roles.py relay <db_url> <bootstrap>
    python kafka_roles.py consume <db_url> <bootstrap> <group> <marker>

Fault injection comes from the environment (CRM_FAULT_RELAY_EXIT_AFTER_PUBLISH,
CRM_FAULT_CONSUMER_EXIT_AFTER), exactly as `make chaos` uses it.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table

from crm.events.v1.envelope_pb2 import Envelope
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
                  max_attempts: int = 4, backoff: float = 0.05) -> IdempotentConsumer:
    return IdempotentConsumer(
        group, [TOPIC], effect_handler(marker, fail_marker), db, consumer_config(bootstrap, group),
        lambda: idempotent_producer(bootstrap), "kit-tests", max_attempts=max_attempts, backoff=backoff,
    )


def _run_until_signal(target) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    target(stop)


def main(argv: list[str]) -> int:
    role, db_url, bootstrap = argv[:3]
    db = Database(db_url)
    if role == "relay":
        relay = OutboxRelay(db, lambda: idempotent_producer(bootstrap), "kit-tests", poll_interval=0.05)
        _run_until_signal(relay.run)
    elif role == "consume":
        group, marker = argv[3:5]
        _run_until_signal(make_consumer(db, bootstrap, group, marker).run)
    else:
        raise SystemExit(f"unknown role {role}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The outbox relay: committed outbox rows -> Kafka, marked sent only once Kafka confirmed.

Wake-up: on PostgreSQL the relay LISTENs on ``crm_outbox`` and every outbox insert NOTIFYs
(delivered at commit), so an event is on Kafka milliseconds after its transaction commits;
polling every ``CRM_OUTBOX_POLL_INTERVAL`` is only the fallback (and SQLite's way).

Order and uniqueness: one relay per service publishes at a time (a PostgreSQL advisory lock
makes a second replica wait), rows go out in id order, and the idempotent producer keeps
that order per partition. A crash after publishing and before marking republishes those
rows: consumers drop the duplicates by ``event_id`` (the inbox), so the effect is once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from sqlalchemy import func, select, update

from crm_kafka.outbox import NOTIFY_CHANNEL, OUTBOX
from crm_kit import consistency, metrics
from crm_kit.db import Database, is_postgres, utcnow

log = logging.getLogger(__name__)

_ADVISORY_LOCK_KEY = 0x0C_0B_0A  # one relay per database


class OutboxRelay:
    """Publishes one service's outbox; ``run(stop)`` loops until ``stop`` is set.

    Extension point: ``_after_publish`` runs between Kafka's confirmation of a batch and the
    transaction that marks its rows sent - the window the exactly-once design must survive a
    crash in. It does nothing here; a subclass may observe there (the chaos tooling's
    ``crm_devstack.chaos.crashing`` dies in it, like a SIGKILL, to prove the republish).
    """

    def __init__(
        self,
        database: Database,
        producer_factory: Callable[[], Producer],
        service: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        delivery_timeout: float = 30.0,
    ) -> None:
        self.database = database
        self.producer_factory = producer_factory
        self.service = service
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.delivery_timeout = delivery_timeout
        self.heartbeat = time.monotonic()
        self._producer: Producer | None = None
        self._listen_conn: Any = None
        self._last_gauges = 0.0

    # -- public -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; survives database and broker outages by retrying."""
        while not stop.is_set():
            try:
                if is_postgres(self.database.engine) and not self._hold_leadership(stop):
                    continue
                self._loop(stop)
            except Exception:  # noqa: BLE001 - the relay must outlive a database or broker blip
                log.exception("outbox relay failed; retrying in 1 s")
                self._close_listener()
                stop.wait(1.0)
        self._close_listener()
        if self._producer is not None:
            self._producer.flush(5)

    def publish_pending(self) -> int:
        """Publish every committed, unsent row once; returns how many were delivered."""
        total = 0
        while True:
            delivered = self._publish_batch()
            total += delivered
            if delivered < self.batch_size:
                return total

    # -- internals --------------------------------------------------------------------------

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = self.producer_factory()
        return self._producer

    def _hold_leadership(self, stop: threading.Event) -> bool:
        if self._listen_conn is not None:
            return True
        import psycopg

        # A dedicated connection outside the pool: LISTEN and the advisory lock live on it.
        url = self.database.engine.url.set(drivername="postgresql")
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,)).fetchone()
        got = bool(row and row[0])
        if not got:
            conn.close()
            log.info("another outbox relay holds the lock; standing by")
            self.heartbeat = time.monotonic()
            stop.wait(2.0)
            return False
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._listen_conn = conn
        return True

    def _close_listener(self) -> None:
        if self._listen_conn is not None:
            try:
                self._listen_conn.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail too
                log.debug("closing the LISTEN connection failed: %s", exc)
            self._listen_conn = None

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.publish_pending()
            self._update_gauges()
            self.heartbeat = time.monotonic()
            self._wait_for_wakeup(stop)

    def _wait_for_wakeup(self, stop: threading.Event) -> None:
        if self._listen_conn is None:
            stop.wait(self.poll_interval)
            return
        # Returns at the first NOTIFY, after the fallback interval, or soon after a stop
        # (waits in slices of at most 1 s so SIGTERM is honoured promptly). Several notifies
        # that arrived meanwhile are drained by the next publish_pending anyway.
        deadline = time.monotonic() + max(self.poll_interval, 0.5)
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for _ in self._listen_conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                return

    def _publish_batch(self) -> int:
        with self.database.transaction() as session:
            rows = session.execute(
                select(OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload, OUTBOX.c.headers,
                       OUTBOX.c.created_at)
                .where(OUTBOX.c.sent_at.is_(None))
                .order_by(OUTBOX.c.id)
                .limit(self.batch_size)
            ).all()
        if not rows:
            return 0
        delivered: list[int] = []
        positions: dict[tuple[str, int], int] = {}
        failures: list[str] = []

        def on_delivery(row_id: int) -> Callable[[KafkaError | None, Message], None]:
            def callback(err: KafkaError | None, msg: Message) -> None:
                if err is None:
                    delivered.append(row_id)
                    where = (msg.topic() or "", msg.partition() or 0)
                    positions[where] = max(positions.get(where, 0), (msg.offset() or 0) + 1)
                    metrics.EVENTS_PUBLISHED.labels(self.service, msg.topic()).inc()
                else:
                    failures.append(f"{msg.topic()}: {err}")
            return callback

        producer = self.producer
        for row in rows:
            headers = [(name, value.encode()) for name, value in row.headers]
            while True:
                try:
                    producer.produce(row.topic, key=row.key.encode(), value=row.payload, headers=headers,
                                     on_delivery=on_delivery(row.id))
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.1)
        remaining = producer.flush(self.delivery_timeout)
        if remaining:
            log.warning("%d outbox messages not confirmed within %.0f s", remaining, self.delivery_timeout)
        if failures:
            log.error("outbox delivery failed for %d rows, first: %s", len(failures), failures[0])
        if delivered:
            self._after_publish(delivered)
            now = utcnow()
            with self.database.transaction() as session:
                session.execute(update(OUTBOX).where(OUTBOX.c.id.in_(delivered)).values(sent_at=now))
                # With the marks, so "no unsent row up to P" implies these offsets cover P.
                consistency.advance_relay_positions(session, positions)
            created = {row.id: row.created_at for row in rows}
            for row_id in delivered:
                metrics.OUTBOX_PUBLISH_LATENCY.labels(self.service).observe(
                    max(0.0, (now - created[row_id]).total_seconds()))
        if failures and not delivered:
            time.sleep(0.5)  # the broker is away: do not spin
        return len(delivered)

    def _after_publish(self, row_ids: list[int]) -> None:
        """Called once Kafka confirmed the outbox rows ``row_ids``, before they are marked sent."""

    def _update_gauges(self) -> None:
        now = time.monotonic()
        if now - self._last_gauges < 1.0:
            return
        self._last_gauges = now
        with self.database.transaction() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(OUTBOX.c.created_at)).where(OUTBOX.c.sent_at.is_(None))
            ).one()
        metrics.OUTBOX_BACKLOG.labels(self.service).set(count)
        age = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:  # func.min bypasses the column type on SQLite
                import datetime as dt

                oldest = dt.datetime.fromisoformat(str(oldest)).replace(tzinfo=dt.UTC)
            age = max(0.0, (utcnow() - oldest).total_seconds())
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(age)

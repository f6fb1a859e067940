"""The worker process of a service: outbox relay, consumers, housekeeping, health and metrics.

Each loop runs in a thread; ``/healthz`` on ``CRM_WORKER_PORT`` fails when a loop stopped
making progress (a stuck consumer gets its pod restarted), ``/readyz`` checks the database
and Kafka, ``/metrics`` serves this process's metrics. SIGTERM stops the loops cleanly:
consumers commit what they applied and leave their groups, the relay flushes.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import delete

from crm_kafka.clients import consumer_config, idempotent_producer, kafka_ready_check
from crm_kafka.consumer import Handler, IdempotentConsumer
from crm_kafka.outbox import OUTBOX
from crm_kafka.relay import OutboxRelay
from crm_kafka.topics import ensure_topics
from crm_kit import metrics
from crm_kit.db import Database, new_metadata, utcnow
from crm_kit.settings import Settings
from crm_kit.web.idempotency import IdempotencyStore

log = logging.getLogger(__name__)

STALL_SECONDS = 60.0
SENT_OUTBOX_RETENTION_HOURS = 24


@dataclass
class ConsumerSpec:
    """A consumer group of a service: its name (group id and inbox key), topics, handler."""

    name: str
    topics: list[str]
    handler: Handler


@dataclass
class WorkerPlan:
    """What one service's worker runs."""

    service: str
    consumers: list[ConsumerSpec] = field(default_factory=list)
    relay: bool = True
    # Other loops of the service (e.g. a scheduler): (name, run(stop)); healthy while alive.
    extra_loops: list[tuple[str, Callable[[threading.Event], None]]] = field(default_factory=list)

    def consumer_name(self, spec: ConsumerSpec) -> str:
        """The group id (and inbox and offsets key) of one of this plan's consumers."""
        return f"{self.service}.{spec.name}"

    def event_types(self) -> dict[str, frozenset[str] | None]:
        """Consumer name -> the event types its handler acts on (a ``Dispatch`` says; None: every
        type). The consumer leaves the other types alone: no handler call, no inbox row."""
        return {self.consumer_name(spec): getattr(spec.handler, "event_types", None) for spec in self.consumers}

    def readers(self) -> dict[str, list[str]]:
        """Topic -> the names of this plan's consumers that read it (the service's read models)."""
        readers: dict[str, list[str]] = {}
        for spec in self.consumers:
            for topic in spec.topics:
                readers.setdefault(topic, []).append(self.consumer_name(spec))
        return readers


class _Loop:
    def __init__(self, name: str, target: Callable[[threading.Event], None], heartbeat: Callable[[], float]) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.thread = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
        self.error: BaseException | None = None
        self._stop: threading.Event | None = None

    def _run(self, target: Callable[[threading.Event], None]) -> None:
        try:
            assert self._stop is not None
            target(self._stop)
        except BaseException as exc:  # noqa: BLE001 - recorded and reported by /healthz
            self.error = exc
            log.exception("worker loop %s died", self.name)

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        self.thread.start()

    def healthy(self) -> bool:
        return self.thread.is_alive() and time.monotonic() - self.heartbeat() < STALL_SECONDS


class Worker:
    """Builds and runs the loops of a ``WorkerPlan``.

    ``relay_type`` and ``consumer_type`` are the components it builds: a tool that runs a
    service's worker with wrapped components (the chaos run's ``faulty_worker``) sets subclasses.
    """

    relay_type: type[OutboxRelay] = OutboxRelay
    consumer_type: type[IdempotentConsumer] = IdempotentConsumer

    def __init__(self, settings: Settings, plan: WorkerPlan, database: Database | None = None) -> None:
        self.settings = settings
        self.plan = plan
        self.database = database or Database(settings.database_url)
        self.stop = threading.Event()
        bootstrap = settings.kafka_bootstrap
        extra = settings["CRM_KAFKA_EXTRA"]
        self.kafka_check = kafka_ready_check(bootstrap, extra)
        self.loops: list[_Loop] = []
        if plan.relay:
            relay = self.relay_type(
                self.database,
                lambda: idempotent_producer(bootstrap, extra),
                plan.service,
                batch_size=settings["CRM_OUTBOX_BATCH"],
                poll_interval=settings["CRM_OUTBOX_POLL_INTERVAL"],
            )
            self.relay: OutboxRelay | None = relay
            self.loops.append(_Loop("outbox-relay", relay.run, lambda: relay.heartbeat))
        else:
            self.relay = None
        for spec in plan.consumers:
            consumer = self.consumer_type(
                plan.consumer_name(spec),
                spec.topics,
                spec.handler,
                self.database,
                consumer_config(bootstrap, plan.consumer_name(spec), extra),
                lambda: idempotent_producer(bootstrap, extra),
                plan.service,
                max_attempts=settings["CRM_CONSUMER_MAX_ATTEMPTS"],
                backoff=settings["CRM_CONSUMER_BACKOFF"],
            )
            self.loops.append(_Loop(f"consumer:{spec.name}", consumer.run,
                                    lambda c=consumer: c.heartbeat))  # type: ignore[misc]
        for name, target in plan.extra_loops:
            self.loops.append(_Loop(name, target, time.monotonic))
        self._housekeeping_beat = time.monotonic()
        self.loops.append(_Loop("housekeeping", self._housekeeping, lambda: self._housekeeping_beat))

    def _housekeeping(self, stop: threading.Event) -> None:
        """Forget expired idempotency keys and old sent outbox rows, once a minute."""
        store = IdempotencyStore(new_metadata().tables["idempotency_keys"], self.settings["CRM_IDEMPOTENCY_TTL"])
        import datetime as dt

        while not stop.is_set():
            self._housekeeping_beat = time.monotonic()
            try:
                with self.database.transaction() as session:
                    store.purge_expired(session)
                    cutoff = utcnow() - dt.timedelta(hours=SENT_OUTBOX_RETENTION_HOURS)
                    session.execute(delete(OUTBOX).where(OUTBOX.c.sent_at.is_not(None), OUTBOX.c.sent_at < cutoff))
            except Exception as exc:  # noqa: BLE001 - retried next round
                log.warning("housekeeping failed: %s", exc)
            stop.wait(30.0)
            self._housekeeping_beat = time.monotonic()
            stop.wait(30.0)

    def healthy(self) -> dict[str, bool]:
        return {loop.name: loop.healthy() for loop in self.loops}

    def ready(self) -> dict[str, str]:
        results = {}
        for name, check in (("database", self.database.ping), ("kafka", self.kafka_check)):
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001
                results[name] = f"unavailable: {type(exc).__name__}"
        return results

    def run(self) -> int:
        ensure_topics(self.settings.kafka_bootstrap, partitions=self.settings["CRM_TOPIC_PARTITIONS"],
                      replication=self.settings["CRM_TOPIC_REPLICATION"], extra=self.settings["CRM_KAFKA_EXTRA"])
        for loop in self.loops:
            loop.start(self.stop)
        server = _serve_health(self) if self.settings["CRM_WORKER_PORT"] else None
        log.info("worker started", extra={"loops": [loop.name for loop in self.loops]})
        try:
            while not self.stop.wait(1.0):
                for loop in self.loops:
                    metrics.WORKER_HEARTBEAT.labels(self.plan.service, loop.name).set(
                        time.time() - (time.monotonic() - loop.heartbeat()))
        finally:
            for loop in self.loops:
                loop.thread.join(timeout=15)
            if server is not None:
                server.shutdown()
            self.database.dispose()
        failed = [loop.name for loop in self.loops if loop.error is not None]
        return 1 if failed else 0


def _serve_health(worker: Worker) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/healthz":
                loops = worker.healthy()
                ok = all(loops.values())
                self._send(200 if ok else 503, json.dumps({"status": "ok" if ok else "stalled",
                                                           "loops": loops}).encode())
            elif self.path == "/readyz":
                checks = worker.ready()
                ok = all(v == "ok" for v in checks.values())
                self._send(200 if ok else 503, json.dumps({"status": "ready" if ok else "not ready",
                                                           "checks": checks}).encode())
            elif self.path == "/metrics":
                data, content_type = metrics.render_latest()
                self._send(200, data, content_type)
            else:
                self._send(404, json.dumps({"type": "about:blank", "title": "Not Found", "status": 404,
                                            "detail": "No such endpoint."}).encode(), "application/problem+json")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet access log
            return

    server = ThreadingHTTPServer(("0.0.0.0", worker.settings["CRM_WORKER_PORT"]), Handler)
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server


def run_worker(settings: Settings, plan: WorkerPlan, database: Database | None = None) -> int:
    """Entry point for ``crm-service <name> worker``: run until SIGTERM or SIGINT."""
    # (The metrics directory was made fresh by `crm-service ... worker` before any import.)
    worker = Worker(settings, plan, database)

    def _stop(signum: int, _frame: Any) -> None:
        log.info("worker stopping (signal %d)", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return worker.run()

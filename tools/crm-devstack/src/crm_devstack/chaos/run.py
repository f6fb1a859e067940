"""One chaos run: load, faults in turn, catch-up, verification, report."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine

from crm_devstack.chaos.faults import FAULT_KINDS, Fault, FaultInjector, InjectedFault, plan_faults
from crm_devstack.chaos.observe import Backlog, RedeliveryWatch, handled_types, subscriptions, wait_caught_up
from crm_devstack.chaos.verify import Check, Verification, Verifier
from crm_devstack.chaos.webhooks import (
    WAIT_SECONDS,
    Receiver,
    Subscription,
    WebhookVerification,
    public_events,
    receiver,
    subscribe,
    verify_deliveries,
)
from crm_devstack.chaos.workload import Api, Client, KindSetup, Pace, RecordLedger, Stats, configure
from crm_devstack.kafka import KafkaBroker, ensure_kafka_jars
from crm_devstack.platform import Platform, start_platform
from crm_devstack.postgres import PostgresCluster
from crm_devstack.stack import SERVICES, find_repo_root

PLATFORM_ENV = {
    # Small processes (the 2-core machine runs everything), the limiter far above the load.
    "CRM_WEB_CONCURRENCY": "1",
    "CRM_WEB_THREADS": "8",
    "CRM_RATE_LIMIT": "1000000/second",
}


@dataclass
class ChaosConfig:
    operations: int = 10_000  # client operations, at least (the load goes on until every fault is done)
    clients: int = 8
    rate: float | None = None  # operations per second over all clients (None: as fast as they go)
    seed: int = 1
    faults: list[Fault] = field(default_factory=plan_faults)
    catch_up_timeout: float = 600.0
    webhook_timeout: float = WAIT_SECONDS  # after the catch-up, for the receiver to have every event
    db_prefix: str = "chaos"


@dataclass
class ChaosReport:
    operations: Counter[str]
    seconds: float
    faults: list[InjectedFault]
    stats: Stats
    catch_up_seconds: float
    caught_up: bool
    backlog: Backlog
    duplicates_dropped: int  # by the consumers' inboxes, from their metrics (a lower bound)
    verification: Verification | None
    errors: list[str]
    logs_dir: Path | None = None
    webhooks: WebhookVerification | None = None  # the deliveries to the run's receiver

    @property
    def webhooks_lost(self) -> int:
        return self.webhooks.lost if self.webhooks else -1

    @property
    def total_operations(self) -> int:
        return sum(self.operations.values())

    @property
    def faults_by_kind(self) -> Counter[str]:
        return Counter(f.fault.kind for f in self.faults)

    @property
    def lost(self) -> int:
        return self.verification.lost if self.verification else -1

    @property
    def duplicated(self) -> int:
        return self.verification.duplicated if self.verification else -1

    @property
    def own_writes_refused(self) -> int:
        """404/422 answers to requests about a client's own writes (read-your-writes: must be 0)."""
        return sum(self.stats.refused.values())

    @property
    def ok(self) -> bool:
        return (not self.errors and self.caught_up and self.verification is not None and self.lost == 0
                and self.duplicated == 0 and self.verification.dead_lettered == 0
                and self.own_writes_refused == 0 and self.webhooks is not None and self.webhooks.ok
                and all(self.faults_by_kind[kind] for kind in FAULT_KINDS) and not self.stats.unexpected)

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-friendly data (``--json``)."""
        v = self.verification
        return {
            "ok": self.ok, "operations": dict(self.operations), "total_operations": self.total_operations,
            "seconds": round(self.seconds, 1), "lost": self.lost, "duplicated": self.duplicated,
            "faults": [{"kind": f.fault.kind, "target": f.fault.target, "at_seconds": round(f.at, 1),
                        "seconds": round(f.seconds, 1), "after_operations": f.after_operations} for f in self.faults],
            "redeliveries": {"republished_by_relays": v.republished if v else None,
                             "dropped_by_consumer_inboxes": self.duplicates_dropped,
                             "client_retries": self.stats.retries, "idempotent_replays": self.stats.replayed,
                             "patches_settled_by_reading": self.stats.decided_by_reading},
            "dead_lettered": v.dead_lettered if v else None,
            "own_writes_refused": {"refused": self.own_writes_refused, "by_operation": dict(self.stats.refused),
                                   "checked": dict(self.stats.own_requests),
                                   "examples": self.stats.refusal_examples},
            "caught_up_seconds": round(self.catch_up_seconds, 1) if self.caught_up else None,
            "checks": [{"name": c.name, "checked": c.checked, "lost": c.lost, "duplicated": c.duplicated,
                        "examples": c.examples} for c in v.checks] if v else [],
            "counts": v.counts if v else {}, "errors": self.errors, "unexpected": self.stats.unexpected,
            "webhooks": self.webhooks.to_dict() if self.webhooks else None,
        }

    def render(self) -> str:
        """The counts, as printed by ``make chaos``."""
        ops = self.operations
        v = self.verification
        lines = [
            f"chaos run: {self.total_operations} operations by concurrent clients in {self.seconds:.0f} s "
            f"({ops['create']} creates, {ops['stage_change']} stage changes, {ops['link']} contacts linked, "
            f"{ops['catalogue_write']} catalogue writes)",
        ]
        if v is not None:
            lines.append(
                "trigger-driven actions: "
                + ", ".join(f"{v.counts.get(f'{k} trigger executions applied', 0)} {k} firings" for k in
                            ("lead", "opportunity"))
                + f"; {v.counts.get('events', 0)} events in the outboxes")
        kinds = self.faults_by_kind
        lines.append("faults injected: " + ", ".join(f"{kind} {kinds[kind]}" for kind in FAULT_KINDS)
                     + " (" + ", ".join(f"{f.fault} {f.seconds:.1f} s" for f in self.faults) + ")")
        s = self.stats
        lines.append(
            f"redeliveries observed: {v.republished if v else '?'} events published again by a relay, "
            f"{self.duplicates_dropped} duplicates dropped by consumer inboxes (metrics); client retries "
            f"{s.retries} (statuses {dict(sorted(s.statuses.items()))}), {s.replayed} idempotent replays, "
            f"{s.decided_by_reading} ambiguous PATCHes settled by reading ({s.applied_unseen} had been applied)")
        lines.append(f"caught up {'in' if self.caught_up else 'NOT within'} {self.catch_up_seconds:.0f} s"
                     + ("" if self.caught_up else f": {self.backlog}"))
        if v is not None:
            width = max(len(c.name) for c in v.checks)
            for c in v.checks:
                lines.append(f"  {c.name:<{width}}  checked {c.checked:>7}  lost {c.lost:>4}  duplicated "
                             f"{c.duplicated:>4}")
                lines.extend(f"      {example}" for example in c.examples)
            lines.append(f"dead-lettered: {v.dead_lettered}")
        if self.webhooks is not None:
            lines.extend(self.webhooks.render())
        by_operation = ", ".join(f"{op} {s.refused[op]} of {n}" for op, n in sorted(s.own_requests.items()))
        lines.append(f"own writes refused (404/422): {self.own_writes_refused} of {sum(s.own_requests.values())} "
                     f"requests about the clients' own records ({by_operation or 'none'})")
        lines.extend(f"      {example}" for example in s.refusal_examples)
        lines.extend(f"unexpected answer: {u}" for u in s.unexpected[:10])
        lines.extend(f"error: {e}" for e in self.errors)
        lines.append(f"lost: {self.lost}   duplicated: {self.duplicated}   webhook deliveries lost: "
                     f"{self.webhooks_lost}   own writes refused: {self.own_writes_refused}   -> "
                     f"{'OK' if self.ok else 'FAILED'}")
        if self.logs_dir is not None:
            lines.append(f"logs: {self.logs_dir}")
        return "\n".join(lines)


@contextmanager
def own_infrastructure() -> Iterator[tuple[KafkaBroker, PostgresCluster]]:
    """A Kafka broker and a PostgreSQL cluster for one run alone, under temporary folders (a
    chaos run kills and restarts them: never give it ones that other work uses)."""
    cache = Path(os.environ.get("CRM_KAFKA_CACHE") or find_repo_root() / ".run" / "kafka-cache")
    pg_dir = Path(tempfile.mkdtemp(prefix="crm-chaos-pg-"))
    kafka_dir = Path(tempfile.mkdtemp(prefix="crm-chaos-kafka-"))
    postgres = PostgresCluster(pg_dir)
    kafka = KafkaBroker(kafka_dir, ensure_kafka_jars(cache))
    try:
        postgres.start()
        kafka.start(timeout=180)
        yield kafka, postgres
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(kafka_dir, ignore_errors=True)


@contextmanager
def _engines(platform: Platform) -> Iterator[dict[str, Engine]]:
    engines = {name: create_engine(platform.db_urls[name], pool_pre_ping=True) for name in SERVICES}
    try:
        yield engines
    finally:
        for engine in engines.values():
            engine.dispose()


def run_chaos(kafka: KafkaBroker, postgres: PostgresCluster, config: ChaosConfig, *,
              keep_logs: bool = False, log: Callable[[str], None] = print) -> ChaosReport:
    """Start a platform on ``kafka`` and ``postgres`` (both this run's own: they are killed and
    restarted), run the load with the faults, wait for the catch-up, verify; stop the platform."""
    platform = start_platform(kafka, postgres, db_prefix=config.db_prefix, env=PLATFORM_ENV)
    try:
        with _engines(platform) as engines, receiver() as endpoint:
            report = _run(platform, kafka, postgres, config, engines, endpoint, log)
    finally:
        platform.stop(keep_logs=keep_logs)
    if keep_logs:
        report.logs_dir = platform.config.logs_dir
    return report


def _run(platform: Platform, kafka: KafkaBroker, postgres: PostgresCluster, config: ChaosConfig,
         engines: dict[str, Engine], endpoint: Receiver, log: Callable[[str], None]) -> ChaosReport:
    tag = uuid.uuid4().hex[:6].upper()
    stop = threading.Event()
    headers = platform.auth(("admin",), user="chaos-admin")
    admin = Api(platform.gateway_url, headers, Stats(), stop)
    # First of all, so that every public event of the run is for it (an admin's sees every office).
    subscription = subscribe(admin, endpoint.url)
    endpoint.set_secret(subscription.secret)
    log(f"chaos {tag}: webhook receiver {endpoint.url} subscribed to every event ({subscription.id}); "
        f"it answers every {endpoint.fail_every}th request 500")
    log(f"chaos {tag}: configuring stages, sources, groups and triggers")
    setups: dict[str, KindSetup] = configure(admin, tag)
    groups = subscriptions(platform)  # the consumers to wait for and to check, from the worker plans

    done = 0
    lock = threading.Lock()
    faults_left = [len(config.faults)]

    def count() -> int:
        nonlocal done
        with lock:
            done += 1
            return done

    def keep_going() -> bool:
        return done < config.operations or faults_left[0] > 0

    pace = Pace(config.rate)
    clients = [Client(n, Api(platform.gateway_url, platform.auth(("admin",), user=f"chaos-{n}"), Stats(), stop),
                      setups, tag=tag, seed=config.seed, counter=count, keep_going=keep_going, pace=pace)
               for n in range(config.clients)]
    watch = RedeliveryWatch(platform)
    injector = FaultInjector(platform, kafka, postgres, lambda service: _nudge(admin, service, tag))
    injected: list[InjectedFault] = []
    errors: list[str] = []
    threads = [threading.Thread(target=c.run, name=f"chaos-client-{c.number}", daemon=True) for c in clients]
    started = time.monotonic()
    watch.start()
    for thread in threads:
        thread.start()
    log(f"chaos {tag}: {config.clients} clients, {config.operations} operations, faults: "
        + ", ".join(map(str, config.faults)))
    try:
        for n, fault in enumerate(config.faults):
            # Spread the faults over the load: fault n once n+1 parts of it are done.
            threshold = config.operations * (n + 1) // (len(config.faults) + 1)
            while done < threshold and any(t.is_alive() for t in threads):
                time.sleep(0.2)
            if not any(t.is_alive() for t in threads):
                break
            at = time.monotonic()
            log(f"  {done:>6} operations: {fault}")
            injector.inject(fault)
            injected.append(InjectedFault(fault, at - started, time.monotonic() - at, done))
            faults_left[0] -= 1
    except Exception as exc:  # noqa: BLE001 - reported; the run still catches up and verifies
        errors.append(f"fault injection failed: {exc}")
    finally:
        faults_left[0] = 0
        for thread in threads:
            thread.join()
    seconds = time.monotonic() - started
    stats = Stats()
    for client in clients:
        stats.merge(client.stats)
        if client.error is not None:
            errors.append(f"client {client.number}: {client.error}")
    stats.merge(admin.stats)
    log(f"chaos {tag}: load done ({done} operations in {seconds:.0f} s); waiting for the catch-up")
    try:
        caught_up, waited, left = wait_caught_up(platform, engines, kafka.bootstrap, groups,
                                                  config.catch_up_timeout)
    except Exception as exc:  # noqa: BLE001 - a process that died on its own
        caught_up, waited, left = False, 0.0, Backlog()
        errors.append(f"catch-up failed: {exc}")
    watch.stop()
    for service in SERVICES:
        if not platform.processes.is_running(f"{service}-worker"):
            errors.append(f"the {service} worker is not running after the run")
    verification = None
    webhooks = None
    if caught_up:
        log(f"chaos {tag}: caught up in {waited:.0f} s; verifying against the databases")
        records: list[RecordLedger] = [r for c in clients for r in c.records]
        verifier = Verifier(engines, kafka.bootstrap, groups, handled_types(platform), setups, records, tag)
        verification = verifier.run()
        webhooks = _webhook_deliveries(verifier, endpoint, subscription, groups["webhooks"], config, log)
        check = Check("webhooks: every public event delivered to the receiver", checked=webhooks.expected,
                      lost=webhooks.lost, examples=[e for e in webhooks.examples if "never delivered" in e])
        verification.checks.append(check)
    operations: Counter[str] = Counter()
    operations.update(stats.operations)
    return ChaosReport(operations, seconds, injected, stats, waited, caught_up, left, watch.duplicates_dropped,
                       verification, errors, webhooks=webhooks)


def _webhook_deliveries(verifier: Verifier, endpoint: Receiver, subscription: Subscription,
                        consumers: dict[str, tuple[str, ...]], config: ChaosConfig,
                        log: Callable[[str], None]) -> WebhookVerification:
    """Wait (bounded) for the receiver to have every public event of the outboxes that the webhooks
    service reads (its consumers' topics, from its worker plan), then compare."""
    topics = {topic for consumer_topics in consumers.values() for topic in consumer_topics}
    events = public_events(verifier.outboxes, verifier.envelopes, topics, subscription.since)
    log(f"webhooks: waiting up to {config.webhook_timeout:g} s for {len(events.expected)} public events at the "
        "receiver")
    complete, waited = endpoint.wait_for(events.expected, config.webhook_timeout)
    result = verify_deliveries(events, endpoint.arrivals())
    result.waited = waited
    if not complete:
        log(f"webhooks: {result.lost} events still not delivered after {waited:.0f} s")
    return result


def _nudge(api: Api, service: str, tag: str) -> None:
    """Make ``service`` write an event now (for a relay that must have something to publish)."""
    code = uuid.uuid4().hex[:10].upper()
    if service == "catalogue":
        api.once("POST", "/v1/lead-tables/attributes", json={"names": {"en": f"Chaos nudge {tag} {code}"},
                                                               "code": f"CHN{code}"})
    elif service == "linking":
        api.once("POST", "/v1/companies", json={"name": f"Chaos nudge {tag} {code}"})
    # leads, opportunities and triggers write events all the time under the load.

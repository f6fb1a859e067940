"""Sending deliveries: the worker's ``deliver`` loop.

The loop claims due deliveries - for each endpoint at most ``CRM_WEBHOOK_CONCURRENCY`` in flight,
and of one record's events only the oldest undelivered one (so they arrive in order) - by
leasing them (``leased_until``: a worker that dies lets its leases lapse, and another attempt
goes out with the same ``webhook-id``). Each is POSTed from a thread of a pool, so a slow
endpoint holds only its own slots, each for at most ``CRM_WEBHOOK_TIMEOUT``.

An attempt is a success on a 2xx. Anything else (another status, a redirect - never followed -,
a timeout, a refused connection, a target that now resolves to a non-public address) is logged
in ``attempts`` and retried with exponential backoff and jitter. An endpoint that has failed
every attempt for ``CRM_WEBHOOK_RETRY_DAYS`` is disabled with the reason; its deliveries wait
for it to be enabled again.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import and_, delete, exists, func, not_, or_, select, update

from crm_kit.db import Database, database_unavailable, utcnow
from crm_kit.settings import Settings
from crm_webhooks import signing, targets
from crm_webhooks.ingest import QUEUED
from crm_webhooks.tables import attempts, deliveries, events, subscriptions

log = logging.getLogger(__name__)

ATTEMPTS = Counter("crm_webhook_attempts_total", "Webhook delivery attempts, by result (delivered: a 2xx; failed: "
                   "another answer; error: no answer in time or no connection; refused: the target resolved to "
                   "a non-public address).", ["result"])
DELIVERY_SECONDS = Histogram("crm_webhook_delivery_seconds", "From an event's commit to its delivery (a 2xx).",
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400))
BACKLOG = Gauge("crm_webhook_backlog", "Undelivered deliveries per endpoint.", ["subscription"],
                multiprocess_mode="max")
BACKLOG_AGE = Gauge("crm_webhook_backlog_age_seconds", "Age of the oldest undelivered event per endpoint (0: none).",
                    ["subscription"], multiprocess_mode="max")
DISABLED = Gauge("crm_webhook_disabled_endpoints", "Endpoints disabled after failing for CRM_WEBHOOK_RETRY_DAYS.",
                 multiprocess_mode="max")

BACKOFF_BASE = 1.0  # seconds before the first retry; doubles each attempt
BACKOFF_MAX = 3600.0
LEASE_MARGIN = 5.0  # seconds a lease outlives the timeout (a dead worker's lapse that much later)
MAX_ERROR = 500
RETENTION = dt.timedelta(days=30)
KEEP_DELIVERED = dt.timedelta(days=1)
GAUGES_EVERY = 5.0
MIN_GAP = 0.02  # seconds between two rounds at the least
HOUSEKEEPING_EVERY = 300.0


def backoff(attempt: int, base: float = BACKOFF_BASE) -> float:
    """Seconds before the retry after the ``attempt``-th failure: exponential, capped, with jitter
    (between half and all of it, so endpoints that fail together do not retry together)."""
    full = min(base * 2 ** max(attempt - 1, 0), BACKOFF_MAX)
    return full * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


@dataclass(frozen=True)
class Claimed:
    id: int
    subscription_id: str
    url: str
    secrets: tuple[str, ...]
    event_id: str
    event_type: str
    attempt: int
    body: bytes
    occurred_at: dt.datetime


@dataclass(frozen=True)
class Outcome:
    result: str  # delivered | failed | error | refused
    status_code: int | None
    duration_ms: int
    error: str | None


def _earlier_pending() -> Any:
    earlier = deliveries.alias("earlier")
    return exists().where(earlier.c.subscription_id == deliveries.c.subscription_id,
                          earlier.c.ordering_key == deliveries.c.ordering_key,
                          earlier.c.state == "pending", earlier.c.id < deliveries.c.id)


class Dispatcher:
    """The ``deliver`` loop of the worker."""

    def __init__(self, settings: Settings, database: Database, *, backoff_base: float = BACKOFF_BASE,
                 poll: float = 0.25) -> None:
        self.database = database
        self.vault = signing.Vault(settings["CRM_WEBHOOK_SECRETS_KEY"])
        self.allow_loopback = bool(settings["CRM_WEBHOOK_ALLOW_LOOPBACK"])
        self.timeout = float(settings["CRM_WEBHOOK_TIMEOUT"])
        self.cap = max(1, int(settings["CRM_WEBHOOK_CONCURRENCY"]))
        self.retry_for = dt.timedelta(days=float(settings["CRM_WEBHOOK_RETRY_DAYS"]))
        self.backoff_base = backoff_base
        self.poll = poll
        self.pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="crm-webhook")
        self.in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._gauges_at = 0.0
        self._housekeeping_at = time.monotonic() + 10.0
        self._known_gauges: set[str] = set()

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the database may be away: wait and try again
                if not database_unavailable(exc):
                    log.exception("webhook dispatcher: a round failed")
                stop.wait(1.0)
                continue
            QUEUED.clear()
            # A short gap between rounds: a stream of commits must not turn the loop into a spin.
            stop.wait(MIN_GAP)
            # Woken by new deliveries (this process's consumer) or a finished attempt.
            deadline = time.monotonic() + self.poll
            while not stop.is_set() and time.monotonic() < deadline:
                if QUEUED.is_set() or self._done.is_set():
                    break
                QUEUED.wait(0.01)
            self._done.clear()
        self.pool.shutdown(wait=True, cancel_futures=False)

    def tick(self) -> int:
        """One round: claim what is due and send it; how many were claimed."""
        now = time.monotonic()
        if now >= self._gauges_at:
            self._gauges_at = now + GAUGES_EVERY
            self.update_gauges()
        if now >= self._housekeeping_at:
            self._housekeeping_at = now + HOUSEKEEPING_EVERY
            self.housekeeping()
        claimed = self.claim()
        for item in claimed:
            self.pool.submit(self._send_and_record, item)
        return len(claimed)

    def run_until_idle(self, timeout: float = 30.0) -> None:
        """Send everything due now and wait for the answers (tests, tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tick() == 0 and not self.in_flight:
                return
            self._done.wait(0.05)
            self._done.clear()
        raise TimeoutError("deliveries still in flight")

    # -- claiming ------------------------------------------------------------------------------

    def claim(self, limit: int = 200) -> list[Claimed]:
        with self._lock:
            full = {sub for sub, n in self.in_flight.items() if n >= self.cap}
        now = utcnow()
        with self.database.transaction() as s:
            # Only the endpoints that may be sent to now: an inactive one's queue (it may be long: it
            # keeps collecting) is never looked through.
            open_ids = [sub for sub in s.execute(select(subscriptions.c.id).where(
                subscriptions.c.active.is_(True))).scalars() if sub not in full]
            if not open_ids:
                return []
            stmt = (select(deliveries.c.id, deliveries.c.subscription_id, deliveries.c.event_id,
                           deliveries.c.event_type, deliveries.c.attempts, events.c.body, events.c.occurred_at,
                           subscriptions.c.url, subscriptions.c.secret, subscriptions.c.previous_secret,
                           subscriptions.c.previous_valid_until)
                    .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
                    .join(events, events.c.seq == deliveries.c.event_seq)
                    .where(deliveries.c.subscription_id.in_(open_ids), deliveries.c.state == "pending",
                           deliveries.c.next_attempt_at <= now,
                           or_(deliveries.c.leased_until.is_(None), deliveries.c.leased_until < now),
                           not_(_earlier_pending()))
                    .order_by(deliveries.c.id).limit(limit))
            if s.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(of=deliveries, skip_locked=True)
            rows = s.execute(stmt).all()
            taken: list[Claimed] = []
            with self._lock:
                for row in rows:
                    if self.in_flight.get(row.subscription_id, 0) >= self.cap:
                        continue
                    self.in_flight[row.subscription_id] = self.in_flight.get(row.subscription_id, 0) + 1
                    taken.append(Claimed(row.id, row.subscription_id, row.url, self._secrets(row, now), row.event_id,
                                         row.event_type, row.attempts + 1, row.body.encode(), row.occurred_at))
            if taken:
                until = now + dt.timedelta(seconds=self.timeout + LEASE_MARGIN)
                s.execute(update(deliveries).where(deliveries.c.id.in_([t.id for t in taken]))
                          .values(leased_until=until))
        return taken

    def _secrets(self, row: Any, now: dt.datetime) -> tuple[str, ...]:
        current = self.vault.open(row.secret)
        if row.previous_secret and row.previous_valid_until and row.previous_valid_until > now:
            return (current, self.vault.open(row.previous_secret))
        return (current,)

    # -- sending -------------------------------------------------------------------------------

    def _send_and_record(self, item: Claimed) -> None:
        try:
            outcome = self.send(item)
            self.record(item, outcome)
        except Exception:
            log.exception("webhook delivery %s: could not record the attempt (the lease will lapse)", item.id)
        finally:
            with self._lock:
                left = self.in_flight.get(item.subscription_id, 1) - 1
                if left > 0:
                    self.in_flight[item.subscription_id] = left
                else:
                    self.in_flight.pop(item.subscription_id, None)
            self._done.set()

    def _pool(self, target: targets.Target) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.address, target.port, target.host)
        pool = self._pools.get(key)
        if pool is None:
            if target.scheme == "https":
                pool = urllib3.HTTPSConnectionPool(target.address, target.port, maxsize=self.cap, block=False,
                                                   server_hostname=target.host, assert_hostname=target.host,
                                                   cert_reqs="CERT_REQUIRED")
            else:
                pool = urllib3.HTTPConnectionPool(target.address, target.port, maxsize=self.cap, block=False)
            self._pools[key] = pool
        return pool

    def send(self, item: Claimed) -> Outcome:
        """POST one delivery; what came of it."""
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            target = targets.check(item.url, allow_loopback=self.allow_loopback)
        except targets.TargetRefused as exc:
            return Outcome("refused", None, took(), str(exc)[:MAX_ERROR])
        headers = signing.headers(item.secrets, item.event_id, utcnow(), item.body)
        default_port = 443 if target.scheme == "https" else 80
        headers["host"] = target.host if target.port == default_port else f"{target.host}:{target.port}"
        headers["user-agent"] = "crm-webhooks/1"
        try:
            response = self._pool(target).urlopen(
                "POST", target.path, body=item.body, headers=headers, redirect=False, retries=False,
                timeout=urllib3.Timeout(connect=min(self.timeout, 5.0), read=self.timeout), preload_content=False)
            try:
                response.read(64 * 1024)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            return Outcome("error", None, took(), f"{type(exc).__name__}: {exc}"[:MAX_ERROR])
        if 200 <= response.status < 300:
            return Outcome("delivered", response.status, took(), None)
        why = "a redirect (not followed)" if 300 <= response.status < 400 else "not a 2xx"
        return Outcome("failed", response.status, took(), f"HTTP {response.status}: {why}")

    # -- recording -----------------------------------------------------------------------------

    def record(self, item: Claimed, outcome: Outcome) -> None:
        now = utcnow()
        with self.database.transaction() as s:
            s.execute(attempts.insert().values(
                delivery_id=item.id, subscription_id=item.subscription_id, event_id=item.event_id,
                event_type=item.event_type, attempt=item.attempt, at=now, status_code=outcome.status_code,
                duration_ms=outcome.duration_ms, error=outcome.error, result=outcome.result))
            if outcome.result == "delivered":
                s.execute(update(deliveries).where(deliveries.c.id == item.id).values(
                    state="delivered", delivered_at=now, leased_until=None, attempts=item.attempt))
                s.execute(update(subscriptions).where(subscriptions.c.id == item.subscription_id,
                                                      subscriptions.c.failing_since.is_not(None))
                          .values(failing_since=None))
            else:
                retry_at = now + dt.timedelta(seconds=backoff(item.attempt, self.backoff_base))
                s.execute(update(deliveries).where(deliveries.c.id == item.id, deliveries.c.state == "pending")
                          .values(leased_until=None, attempts=item.attempt, next_attempt_at=retry_at))
                self._note_failure(s, item, outcome, now)
        ATTEMPTS.labels(outcome.result).inc()
        if outcome.result == "delivered":
            DELIVERY_SECONDS.observe(max(0.0, (now - item.occurred_at).total_seconds()))

    def _note_failure(self, s: Any, item: Claimed, outcome: Outcome, now: dt.datetime) -> None:
        s.execute(update(subscriptions).where(subscriptions.c.id == item.subscription_id,
                                              subscriptions.c.failing_since.is_(None)).values(failing_since=now))
        since = s.execute(select(subscriptions.c.failing_since, subscriptions.c.active)
                          .where(subscriptions.c.id == item.subscription_id)).first()
        if since is not None and since.active and since.failing_since <= now - self.retry_for:
            reason = (f"Every delivery failed since {since.failing_since.isoformat(timespec='seconds')} "
                      f"(the last: {outcome.error or outcome.result}); enable the endpoint again to receive "
                      f"what it missed.")
            s.execute(update(subscriptions).where(subscriptions.c.id == item.subscription_id).values(
                active=False, disabled_reason=reason, disabled_at=now))
            log.warning("webhook endpoint %s disabled: %s", item.subscription_id, reason)

    # -- gauges and housekeeping ---------------------------------------------------------------

    def update_gauges(self) -> None:
        now = utcnow()
        with self.database.transaction() as s:
            rows = s.execute(select(deliveries.c.subscription_id, func.count(), func.min(deliveries.c.created_at))
                             .where(deliveries.c.state == "pending").group_by(deliveries.c.subscription_id)).all()
            disabled = s.execute(select(func.count()).select_from(subscriptions).where(
                subscriptions.c.disabled_reason.is_not(None))).scalar() or 0
        seen = set()
        for sub, count, oldest in rows:
            seen.add(sub)
            BACKLOG.labels(sub).set(count)
            BACKLOG_AGE.labels(sub).set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        for sub in self._known_gauges - seen:
            BACKLOG.labels(sub).set(0)
            BACKLOG_AGE.labels(sub).set(0)
        self._known_gauges |= seen
        DISABLED.set(disabled)

    def housekeeping(self) -> None:
        """Forget what is old: delivered queue rows after a day, the log and the feed after 30 days
        (never an event that a delivery still waits for)."""
        now = utcnow()
        with self.database.transaction() as s:
            s.execute(delete(deliveries).where(deliveries.c.state == "delivered",
                                               deliveries.c.delivered_at < now - KEEP_DELIVERED))
            s.execute(delete(attempts).where(attempts.c.at < now - RETENTION))
            waiting = select(deliveries.c.event_seq).where(deliveries.c.event_seq == events.c.seq)
            s.execute(delete(events).where(and_(events.c.occurred_at < now - RETENTION, not_(exists(waiting)))))


def dispatcher_loop(settings: Settings, database: Database) -> Callable[[threading.Event], None]:
    """The worker's ``deliver`` loop (its dispatcher is made when the loop starts: a plan is also
    built where nothing is sent, e.g. by the api for its read models)."""
    def run(stop: threading.Event) -> None:
        Dispatcher(settings, database).run(stop)
    return run


__all__: Sequence[str] = ("Dispatcher", "backoff", "dispatcher_loop")

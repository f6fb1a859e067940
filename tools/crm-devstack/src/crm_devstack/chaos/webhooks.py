"""Webhook deliveries in a chaos run: a real receiver, one subscription to every event, and the
check that every public event the platform produced reached the receiver.

- ``Receiver``: an ``http.server`` on loopback in a thread of the chaos process. It keeps every
  request (``webhook-id``, body, headers), verifies its signature with the Standard Webhooks
  reference verifier as it arrives (the verifier refuses timestamps older than 5 minutes, so it
  cannot wait for the end of the run), and answers every ``fail_every``-th request 500, so that
  the platform's retries are part of the run.
- ``subscribe``: ``POST /v1/webhooks`` ``{"url", "event_types": ["*"]}`` through the gateway as
  an admin (whose subscription carries every office's events); the secret is shown this once.
- ``public_events``: what the receiver must get - the outbox rows of the topics the webhooks
  service reads (from its worker plan) whose envelope is a public event
  (``crm_webhooks.events.public_event``: the service's own mapping, not a copy of it), written
  after the subscription existed.
- ``verify_deliveries``: every expected event answered 2xx at least once (else lost); a
  ``webhook-id`` that came again carries the same body (a duplicate is allowed: at least once);
  per record (the event's ordering key) the first deliveries come in version order; every
  request's signature verified; the body's type is the event's.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from crm_devstack.chaos.workload import Api
from crm_webhooks.events import public_event

FAIL_EVERY = 20  # the receiver answers every 20th request 500: those deliveries are retried
WAIT_SECONDS = 120.0  # how long the run waits for the receiver to have every event
EXAMPLES = 5
VERIFIED = "verified"
PENDING = "pending"  # came before the secret was known: verified as soon as it is


@dataclass
class Arrival:
    """One request the receiver took."""

    number: int  # 1, 2, ... in the order the receiver took them
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    status: int  # what the receiver answered
    signature: str = PENDING  # VERIFIED, PENDING, or why it did not verify

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


def _verify(webhook: Webhook, arrival: Arrival) -> str:
    try:
        webhook.verify(arrival.body, arrival.headers, json_parse=False)
    except WebhookVerificationError as exc:
        return f"{type(exc).__name__}: {exc}"
    return VERIFIED


class Receiver:
    """A webhook endpoint on ``http://127.0.0.1:<free port>/hook`` in a thread of this process."""

    def __init__(self, *, fail_every: int = FAIL_EVERY, host: str = "127.0.0.1") -> None:
        self.fail_every = fail_every
        self._changed = threading.Condition()
        self._arrivals: list[Arrival] = []
        self._delivered: set[str] = set()
        self._webhook: Webhook | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the worker's connection pool reuses connections

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook
                receiver._take(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the hook's signature
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="chaos-webhook-receiver",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def set_secret(self, secret: str) -> None:
        """The subscription's secret: verifies what came before it was known, and all that follows."""
        webhook = Webhook(secret)
        with self._changed:
            self._webhook = webhook
            pending = [a for a in self._arrivals if a.signature == PENDING]
        for arrival in pending:
            arrival.signature = _verify(webhook, arrival)

    def _take(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in handler.headers.items()}
        arrival = Arrival(0, headers.get("webhook-id", ""), body, headers, 200)
        webhook = self._webhook
        if webhook is not None:
            arrival.signature = _verify(webhook, arrival)
        with self._changed:
            arrival.number = len(self._arrivals) + 1
            if self.fail_every and arrival.number % self.fail_every == 0:
                arrival.status = 500
            self._arrivals.append(arrival)
            if arrival.delivered:
                self._delivered.add(arrival.webhook_id)
            if arrival.signature == PENDING and self._webhook is not None:  # the secret came meanwhile
                arrival.signature = _verify(self._webhook, arrival)
            self._changed.notify_all()
        answer = b"" if arrival.delivered else b"chaos: this one fails on purpose"
        handler.send_response(arrival.status)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def arrivals(self) -> list[Arrival]:
        with self._changed:
            return list(self._arrivals)

    def wait_for(self, webhook_ids: Collection[str], timeout: float) -> tuple[bool, float]:
        """Wait until each of ``webhook_ids`` was answered 2xx (bounded: the receiver waits on
        another actor, the webhooks worker); (all there, seconds waited)."""
        started = time.monotonic()
        wanted = set(webhook_ids)
        with self._changed:
            while not wanted <= self._delivered:
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    return False, time.monotonic() - started
                self._changed.wait(min(left, 1.0))
        return True, time.monotonic() - started


@contextmanager
def receiver(**kw: Any) -> Iterator[Receiver]:
    """A started ``Receiver``, stopped on the way out."""
    started = Receiver(**kw).start()
    try:
        yield started
    finally:
        started.stop()


@dataclass(frozen=True)
class Subscription:
    id: str
    secret: str
    since: dt.datetime  # when its creation had been answered: every later event is for it


def subscribe(api: Api, url: str) -> Subscription:
    """One subscription to every event type at ``url``, made through the gateway by ``api``'s caller."""
    response = api.until_answered("POST", "/v1/webhooks", lambda r: r.status_code == 201,
                                  json={"url": url, "event_types": ["*"], "description": "make chaos receiver"},
                                  headers={"Idempotency-Key": uuid.uuid4().hex})
    since = dt.datetime.now(dt.UTC)
    body = response.json()
    return Subscription(str(body["id"]), str(body["secret"]), since)


@dataclass(frozen=True)
class Expected:
    """A public event the receiver must get."""

    event_id: str
    type: str
    ordering_key: str  # "<entity>:<id>": one record's events, delivered in order
    version: int
    position: tuple[str, int]  # (service, outbox row id): the event's place in its service's commit order


@dataclass
class PublicEvents:
    expected: dict[str, Expected] = field(default_factory=dict)
    # Public events written before the subscription existed: they may come, or not.
    earlier: dict[str, Expected] = field(default_factory=dict)


def public_events(outboxes: Mapping[str, Iterable[Any]], envelopes: Mapping[str, Any], topics: Collection[str],
                  since: dt.datetime) -> PublicEvents:
    """The public events among the outbox rows (``event_id``, ``topic``, ``id``, ``created_at``) of
    ``topics``: expected when written at or after ``since``."""
    found = PublicEvents()
    for service, rows in outboxes.items():
        for row in rows:
            if row.topic not in topics:
                continue
            event = public_event(envelopes[row.event_id])
            if event is None:
                continue
            expected = Expected(event.event_id, event.type, event.ordering_key, event.version, (service, row.id))
            (found.expected if row.created_at >= since else found.earlier)[event.event_id] = expected
    return found


@dataclass
class WebhookVerification:
    """What reached the receiver against what the platform produced."""

    expected: int = 0  # public events written while the subscription existed
    delivered: int = 0  # of those, answered 2xx at least once
    lost: int = 0  # expected and never answered 2xx
    duplicates: int = 0  # 2xx answers beyond the first for a webhook-id (at least once: allowed)
    requests: int = 0
    answered_500: int = 0  # the receiver's on-purpose failures (retried by the platform)
    earlier: int = 0  # public events from before the subscription (not expected)
    signatures_verified: int = 0
    bad_signatures: int = 0  # requests whose signature did not verify
    bodies_differ: int = 0  # webhook-ids that came with more than one body
    out_of_order: int = 0  # first deliveries after a later version's first delivery of the same record
    wrong_type: int = 0  # bodies whose type is not the event's
    unknown: int = 0  # webhook-ids of no public event of the run
    waited: float = 0.0  # seconds the run waited for the receiver after the catch-up
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.expected > 0 and self.lost == 0 and self.bad_signatures == 0 and self.bodies_differ == 0
                and self.out_of_order == 0 and self.wrong_type == 0 and self.unknown == 0)

    def example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "expected": self.expected, "delivered": self.delivered, "lost": self.lost,
                "duplicate_deliveries": self.duplicates, "requests": self.requests,
                "receiver_500s": self.answered_500, "before_subscription": self.earlier,
                "signatures_verified": self.signatures_verified, "bad_signatures": self.bad_signatures,
                "bodies_differ": self.bodies_differ, "out_of_order": self.out_of_order,
                "wrong_type": self.wrong_type, "unknown": self.unknown, "waited_seconds": round(self.waited, 1),
                "examples": self.examples}

    def render(self) -> list[str]:
        lines = [
            f"webhook deliveries: {self.expected} public events expected, {self.delivered} delivered, {self.lost} "
            f"lost, {self.duplicates} duplicate deliveries; {self.requests} requests, {self.answered_500} answered "
            f"500 on purpose (retried); waited {self.waited:.0f} s after the catch-up",
            f"  signatures verified {self.signatures_verified}, not verified {self.bad_signatures}; duplicates with "
            f"another body {self.bodies_differ}; out of order {self.out_of_order}; wrong type {self.wrong_type}; "
            f"unknown ids {self.unknown}; {self.earlier} events from before the subscription",
        ]
        lines.extend(f"      {example}" for example in self.examples)
        return lines


def verify_deliveries(events: PublicEvents, arrivals: Iterable[Arrival]) -> WebhookVerification:
    """Compare the receiver's requests with the public events (see the module docstring)."""
    result = WebhookVerification(expected=len(events.expected), earlier=len(events.earlier))
    by_id: dict[str, list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        result.requests += 1
        by_id[arrival.webhook_id].append(arrival)
        if arrival.status == 500:
            result.answered_500 += 1
        if arrival.signature == VERIFIED:
            result.signatures_verified += 1
        else:
            result.bad_signatures += 1
            result.example(f"request {arrival.number} (webhook-id {arrival.webhook_id!r}): signature "
                           f"{arrival.signature}")
    first: dict[str, int] = {}  # webhook-id -> the number of its first 2xx-answered request
    for webhook_id, got in by_id.items():
        delivered = [a for a in got if a.delivered]
        if delivered:
            first[webhook_id] = delivered[0].number
            result.duplicates += len(delivered) - 1
        if len({a.body for a in got}) > 1:
            result.bodies_differ += 1
            result.example(f"webhook-id {webhook_id} came {len(got)} times with {len({a.body for a in got})} bodies")
        event = events.expected.get(webhook_id) or events.earlier.get(webhook_id)
        if event is None:
            result.unknown += 1
            result.example(f"webhook-id {webhook_id!r} is no public event of this run ({len(got)} requests)")
            continue
        type_ = _type_of(got[0].body)
        if type_ != event.type:
            result.wrong_type += 1
            result.example(f"webhook-id {webhook_id}: type {type_!r}, the event is a {event.type}")
    by_key: dict[str, list[Expected]] = defaultdict(list)
    for event in events.expected.values():
        if event.event_id in first:
            result.delivered += 1
        else:
            result.lost += 1
            result.example(f"{event.type} {event.event_id} ({event.ordering_key} v{event.version}) never delivered")
        by_key[event.ordering_key].append(event)
    for key, record_events in by_key.items():
        result.out_of_order += _out_of_order(key, record_events, first, result)
    return result


def _type_of(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("type") if isinstance(value, dict) else None


def _out_of_order(key: str, record_events: list[Expected], first: Mapping[str, int],
                  result: WebhookVerification) -> int:
    """How many of one record's events were first delivered after a later version's first delivery."""
    by_version: dict[int, list[Expected]] = defaultdict(list)
    for event in record_events:
        if event.event_id in first:
            by_version[event.version].append(event)
    wrong = 0
    latest_before = 0  # the latest first delivery of a lower version
    for version in sorted(by_version):
        group = by_version[version]
        for event in group:
            if first[event.event_id] < latest_before:
                wrong += 1
                result.example(f"{key}: v{version} ({event.type}) first delivered as request {first[event.event_id]}, "
                               f"before a lower version's first delivery (request {latest_before})")
        latest_before = max(latest_before, *(first[e.event_id] for e in group))
    return wrong

"""Figures 12 and 13: a lead's commit -> its webhook received, and webhook deliveries/s.

A real HTTP receiver on loopback (``http.server`` in a thread of the bench, keep-alive, answering
204 as soon as it has read the request) and one subscription made through the gateway as an admin
(``POST /v1/webhooks``: ``lead.created``, filtered on a lead source of this figure's own, so no
other figure's leads reach it). Leads of that source are then created open-loop, paced as figure 2
under load paces its stage changes (``trigger_load.paced_rates``: half and all of figure 1's
create rate, ``load_seconds`` each).

- Figure 12, the latency of each delivery: the receiver's clock when it has read the request
  minus the lead's commit, which is the ``created_at`` of the event's outbox row in the leads
  database (stamped by the leads api in the unit of work's commit, just before ``COMMIT``, on the
  same host clock; the row is found by the ``webhook-id`` header, which is the event id) - the
  same start as figure 3. The envelope's ``timestamp`` in the delivered body (``occurred_at``,
  made when the api built the event, in milliseconds) and the POST's answer are kept in the
  JSON as cross-checks. Goal at half the rate: p99 <= the raw Kafka round trip's p99 + 50 ms.
- Figure 13, keeping up: deliveries the receiver had within the load's window per second against
  the creates per second of the same window (goal at half the rate: at least 0.95x), and the drain
  after the load: from the window's end until the receiver had every event (goal: within 30 s).

Where the time goes is read from the webhooks database (each delivery's queue row, stamped by
its consumer) and kept in the JSON: commit -> queued (relay, Kafka, the webhooks consumer) and
queued -> received (the consumer's commit, the dispatcher's wake-up and claim, the POST).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import aiohttp
import psycopg

from crm_devstack.bench.load import LoadResult, Unexpected, percentile
from crm_devstack.bench.report import Goal, Row
from crm_devstack.bench.trigger_load import open_loop_tasks, paced_load, paced_rates
from crm_devstack.errors import DevstackError

if TYPE_CHECKING:
    from crm_devstack.bench.figures import Bench

LATENCY = "webhook"
RATE = "webhook_rate"
BASELINE = "raw Kafka produce->consume"
RATE_BASELINE = "creates/s over the same window"
DRAIN_BOUND_S = 30.0
DRAIN_BASELINE = f"the {DRAIN_BOUND_S:g} s bound"
KEEP_UP_SHARE = 0.95
SOURCE = "webhooks bench brief (notes/h28)"
LATENCY_GOAL = Goal(at_most=True, factor=1.0, plus=50.0, source=SOURCE)  # ms over the raw p99
RATE_GOAL = Goal(at_most=False, factor=KEEP_UP_SHARE, source=SOURCE)
DRAIN_GOAL = Goal(at_most=True, factor=1.0, source=SOURCE)
EVENT_TYPE = "lead.created"
DESCRIPTION = "make bench: figures 12 and 13"
WAIT_ALL_S = 300.0  # how long the figure waits for every event before it calls the platform broken
BACKLOG_STEP_S = 0.25


@dataclass(frozen=True)
class Arrival:
    event_id: str
    at: float  # time.time() when the receiver had read the request
    event_type: str
    timestamp: str  # the envelope's "timestamp" (occurred_at, RFC 3339 in milliseconds)


class Receiver:
    """A webhook endpoint on 127.0.0.1 in a thread of the bench: it notes when each event (by
    ``webhook-id``) first arrived and for which lead, and answers 204 at once."""

    def __init__(self) -> None:
        self.arrivals: dict[str, Arrival] = {}  # by the lead's id (the body's data.id)
        self.requests = 0
        self.duplicates = 0  # the same webhook-id again (at-least-once: a retry after a lost answer)
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the dispatcher reuses its pooled connections

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                receiver._note(self.headers.get("webhook-id", ""), at, body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="bench-webhook-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bench-hook"

    def _note(self, event_id: str, at: float, body: bytes) -> None:
        try:
            payload = json.loads(body)
            lead_id = str(payload["data"]["id"])
            arrival = Arrival(event_id, at, str(payload.get("type")), str(payload.get("timestamp")))
        except (ValueError, KeyError, TypeError):
            lead_id, arrival = "", Arrival(event_id, at, "?", "")
        with self._arrived:
            self.requests += 1
            if event_id in self._seen:
                self.duplicates += 1
                return
            self._seen.add(event_id)
            self.arrivals.setdefault(lead_id, arrival)
            self._arrived.notify_all()

    def wait_for(self, lead_ids: Iterable[str], timeout: float) -> int:
        """Wait until an event of every lead in ``lead_ids`` arrived; how many are still missing
        when ``timeout`` is up (0: all arrived)."""
        wanted = set(lead_ids)
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                missing = len(wanted - self.arrivals.keys())
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self._arrived.wait(min(left, 1.0))

    def of(self, lead_ids: Iterable[str]) -> dict[str, Arrival]:
        with self._lock:
            return {lead: self.arrivals[lead] for lead in lead_ids if lead in self.arrivals}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def keeping_up(commits: list[float], arrivals: list[float], start: float, seconds: float,
               step: float = BACKLOG_STEP_S) -> dict[str, Any]:
    """Figure 13 from the clock times of a window's commits and their deliveries' arrivals: the
    deliveries that arrived within ``[start, start + seconds]`` per second, the drain (from the
    window's end to the last arrival, 0 when every event arrived in the window) and the backlog
    (committed, not yet received) every ``step`` seconds from ``start`` until the last arrival."""
    end = start + seconds
    in_window = sum(1 for at in arrivals if start <= at <= end)
    last = max(arrivals, default=end)
    series: list[tuple[float, int]] = []
    ordered_commits, ordered_arrivals = sorted(commits), sorted(arrivals)
    c = a = 0
    t = start
    while True:
        while c < len(ordered_commits) and ordered_commits[c] <= t:
            c += 1
        while a < len(ordered_arrivals) and ordered_arrivals[a] <= t:
            a += 1
        series.append((round(t - start, 3), c - a))
        if t >= last:
            break
        t = min(t + step, last)
    at_end = sum(1 for at in commits if at <= end) - sum(1 for at in arrivals if at <= end)
    return {"delivered_in_window": in_window, "per_s": in_window / seconds if seconds > 0 else 0.0,
            "drain_s": max(0.0, last - end), "backlog_at_window_end": at_end,
            "max_backlog": max((backlog for _t, backlog in series), default=0),
            "backlog_series_s_events": [list(point) for point in series]}


def _ms_summary(values: list[float], *, samples: bool = False) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    found = {"count": len(values), "p50_ms": round(1000 * percentile(values, 50), 3),
             "p90_ms": round(1000 * percentile(values, 90), 3), "p99_ms": round(1000 * percentile(values, 99), 3),
             "max_ms": round(1000 * max(values), 3)}
    return {**found, "samples_ms": [round(1000 * v, 2) for v in values]} if samples else found


def _rfc3339(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Phase:
    """One paced run: its creates, when each was answered, and what the receiver got."""

    label: str
    share: float
    rate: float
    load: LoadResult
    started: float  # time.time() when the first create was sent
    answered: dict[str, float]  # lead id -> time.time() when its POST was answered
    arrivals: dict[str, Arrival]
    commits: dict[str, tuple[float, float | None]]  # event id -> outbox created_at, sent_at (epoch s)
    queued: dict[str, tuple[float, float | None, int]]  # event id -> queued, delivered_at, attempts

    def latencies(self) -> list[float]:
        """Commit (outbox created_at) -> received, seconds."""
        return [a.at - self.commits[a.event_id][0] for a in self.arrivals.values()]

    def details(self) -> dict[str, Any]:
        arrivals = list(self.arrivals.values())
        commits = [self.commits[a.event_id][0] for a in arrivals]
        to_queue = [self.queued[a.event_id][0] - self.commits[a.event_id][0] for a in arrivals]
        queue_to_received = [a.at - self.queued[a.event_id][0] for a in arrivals]
        relay = [sent - created for created, sent in (self.commits[a.event_id] for a in arrivals) if sent is not None]
        stamped = [a.at - t for a in arrivals if (t := _rfc3339(a.timestamp)) is not None]
        from_answer = [a.at - self.answered[lead] for lead, a in self.arrivals.items()]
        retried = sum(1 for a in arrivals if self.queued[a.event_id][2] > 1)
        up = keeping_up(commits, [a.at for a in arrivals], self.started, self.load.seconds)
        latencies = self.latencies()
        return {
            "target_per_s": round(self.rate, 2), "achieved_per_s": round(self.load.throughput, 2),
            "creates": self.load.summary(),
            "commit_to_received_ms": _ms_summary(latencies, samples=True),
            "where_the_time_goes_ms": {  # each delivery's samples in the order of commit_to_received_ms's
                "commit_to_relay_ack": _ms_summary(relay),
                "commit_to_queued_in_webhooks": _ms_summary(to_queue, samples=True),
                "queued_to_received": _ms_summary(queue_to_received, samples=True)},
            "cross_checks_ms": {"envelope_timestamp_to_received": _ms_summary(stamped),
                                "post_answered_to_received": _ms_summary(from_answer)},
            "deliveries_retried": retried,
            "keeping_up": up,
        }


def _own_source(bench: Bench) -> str:
    """A lead source of this figure's own, known to the leads service."""
    tag = uuid.uuid4().hex[:8].upper()
    source = bench._post_when_known("/v1/lead-tables/sources", {"names": {"en": f"Bench webhooks {tag}"},
                                                                 "code": f"BW{tag}"}, "the webhook figure's source")
    source_id = str(source["id"])
    bench._post_when_known("/v1/leads", {"title": "bench webhook source probe", "source_id": source_id},
                           "the webhook figure's source in the leads service")
    return source_id


def _subscribe(bench: Bench, url: str, source_id: str) -> str:
    r = bench.call("POST", "/v1/webhooks", json={"url": url, "event_types": [EVENT_TYPE],
                                                  "filter": f'source_id = "{source_id}"',
                                                  "description": DESCRIPTION})
    if r.status_code != 201:
        raise DevstackError(f"POST /v1/webhooks answered {r.status_code}: {r.text[:500]}")
    return str(r.json()["id"])


def _first_delivery(bench: Bench, receiver: Receiver, source_id: str) -> float:
    """One lead of the source, and the seconds until its webhook arrived (the worker's consumer and
    dispatcher are running and the loopback target is allowed)."""
    began = time.monotonic()
    r = bench.call("POST", "/v1/leads", headers=bench.writer, json={"title": "Bench webhook probe",
                                                                     "source_id": source_id})
    if r.status_code != 201:
        raise DevstackError(f"creating the webhook probe lead answered {r.status_code}: {r.text[:500]}")
    if receiver.wait_for([r.json()["id"]], timeout=120):
        raise DevstackError("the webhook of a new lead did not reach the bench's receiver within 120 s: is the "
                            "webhooks worker running, with CRM_WEBHOOK_ALLOW_LOOPBACK=true?")
    return time.monotonic() - began


def _phase(bench: Bench, receiver: Receiver, subscription_id: str, source_id: str, label: str, share: float,
           rate: float, seconds: float) -> Phase:
    answered: dict[str, float] = {}
    started: list[float] = []
    url = f"{bench.gateway}/v1/leads"

    async def create(session: aiohttp.ClientSession, n: int) -> None:
        if n == 0:
            started.append(time.time())
        async with session.post(url, json={"title": f"Bench webhook {n}", "source_id": source_id},
                                headers=bench.writer) as response:
            data = await response.read()
            if response.status != 201:
                raise Unexpected(f"status {response.status}", data)
        answered[str(json.loads(data)["id"])] = time.time()

    tasks = open_loop_tasks(rate, bench.plan.concurrency)
    bench.say(f"  {label}: {rate:,.1f} creates/s, open loop, up to {tasks} at a time, {seconds:g} s")
    load = paced_load(create, rate, seconds, tasks)
    missing = receiver.wait_for(answered, timeout=WAIT_ALL_S)
    if missing:
        raise DevstackError(f"{missing} of {len(answered)} leads' webhooks did not reach the receiver within "
                            f"{WAIT_ALL_S:g} s of the load's end")
    arrivals = receiver.of(answered)
    wrong = [a for a in arrivals.values() if a.event_type != EVENT_TYPE]
    if wrong:
        raise DevstackError(f"the receiver got {wrong[0].event_type} where only {EVENT_TYPE} was subscribed")
    event_ids = [a.event_id for a in arrivals.values()]
    with psycopg.connect(bench.dsn("leads")) as conn:
        outbox = conn.execute("SELECT event_id, created_at, sent_at FROM outbox WHERE event_id = ANY(%s)",
                              (event_ids,)).fetchall()
    with psycopg.connect(bench.dsn("webhooks")) as conn:
        queue = conn.execute("SELECT event_id, created_at, delivered_at, attempts FROM deliveries "
                             "WHERE subscription_id = %s AND event_id = ANY(%s)",
                             (subscription_id, event_ids)).fetchall()
    commits = {str(e): (c.timestamp(), s.timestamp() if s else None) for e, c, s in outbox}
    queued = {str(e): (c.timestamp(), d.timestamp() if d else None, int(n)) for e, c, d, n in queue}
    if len(commits) != len(event_ids) or len(queued) != len(event_ids):
        raise DevstackError(f"of {len(event_ids)} delivered events, {len(commits)} have an outbox row in the leads "
                            f"database and {len(queued)} a delivery row in the webhooks database")
    return Phase(label, share, rate, load, started[0], answered, arrivals, commits, queued)


def figure(bench: Bench) -> list[Row]:
    created = bench._concurrent_creates
    if created is None:
        raise DevstackError("figures 12 and 13 pace their creates at figure 1's create rate: run figure 1 first")
    full = created.throughput
    seconds = bench.plan.load_seconds
    baseline = bench.round_trips()
    raw_p50, raw_p99 = 1000 * percentile(baseline, 50), 1000 * percentile(baseline, 99)
    bench.say(f"figures 12 and 13: lead committed -> webhook received on a loopback receiver, creates paced at half "
              f"and at all of figure 1's {full:,.1f} creates/s, {seconds:g} s each")
    source_id = _own_source(bench)
    receiver = Receiver()
    subscription_id = ""
    phases: list[Phase] = []
    details: dict[str, Any] = {"raw_kafka_p50_ms": round(raw_p50, 3), "raw_kafka_p99_ms": round(raw_p99, 3),
                               "receiver": receiver.url, "event_type": EVENT_TYPE}
    try:
        subscription_id = _subscribe(bench, receiver.url, source_id)
        details["first_delivery_s"] = round(_first_delivery(bench, receiver, source_id), 3)
        for label, share, rate in paced_rates(full):
            bench.settle(f"figure 12, before {label}")
            phase = _phase(bench, receiver, subscription_id, source_id, label, share, rate, seconds)
            phases.append(phase)
            found = phase.details()
            details["half_rate" if share < 1 else "full_rate"] = found
            latency, up = found["commit_to_received_ms"], found["keeping_up"]
            bench.say(f"    {phase.load.ok:,} creates at {phase.load.throughput:,.1f}/s: commit -> received p50 "
                      f"{latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms (raw Kafka p99 {raw_p99:.1f} ms); "
                      f"{up['per_s']:,.1f} deliveries/s in the window, drained {up['drain_s']:.2f} s after it")
    finally:
        if subscription_id:
            r = bench.call("DELETE", f"/v1/webhooks/{subscription_id}")
            if r.status_code != 204:
                bench.say(f"  (deleting the bench's webhook subscription answered {r.status_code}: {r.text[:200]})")
        receiver.stop()
        details["receiver_requests"] = receiver.requests
        details["receiver_duplicates"] = receiver.duplicates
        bench.details["webhooks"] = details
    bench.settle("figures 12 and 13")
    return _rows(phases, details, full, baseline)


def _rows(phases: list[Phase], details: Mapping[str, Any], full: float, baseline: list[float]) -> list[Row]:
    raw_p50, raw_p99 = 1000 * percentile(baseline, 50), 1000 * percentile(baseline, 99)
    latency_rows: list[Row] = []
    rate_rows: list[Row] = []
    for phase in phases:
        half = phase.share < 1
        found = details["half_rate" if half else "full_rate"]
        up, split = found["keeping_up"], found["where_the_time_goes_ms"]
        latencies = phase.latencies()
        p50, p99 = 1000 * percentile(latencies, 50), 1000 * percentile(latencies, 99)
        queued, sent = split["commit_to_queued_in_webhooks"], split["queued_to_received"]
        kept = "" if phase.load.throughput >= 0.9 * phase.rate else \
            f"; the platform did not keep the pace ({phase.load.throughput:,.1f} creates/s)"
        note = (f"{phase.rate:,.1f} creates/s ({phase.share:g}x figure 1's {full:,.1f}), open loop as figure 2 "
                f"under load, {phase.load.ok:,} POST /v1/leads of a source of its own; one subscription "
                f"({EVENT_TYPE}, filtered on that source) to an http.server on 127.0.0.1 answering 204. From the "
                "event's outbox created_at in the leads database (stamped in the api's commit, as figure 3) to the "
                "receiver having read the request, same host clock. p50 / p99 of the parts: commit -> queued by "
                f"the webhooks consumer {queued['p50_ms']:.0f} / {queued['p99_ms']:.0f} ms, queued -> received "
                f"(its commit, the dispatcher's wake-up and claim, the POST) {sent['p50_ms']:.0f} / "
                f"{sent['p99_ms']:.0f} ms{kept}")
        latency_rows += [Row(LATENCY, f"p50 at {phase.label}", "ms", p50, BASELINE, raw_p50, note),
                         Row(LATENCY, f"p99 at {phase.label}", "ms", p99, BASELINE, raw_p99,
                             goal=LATENCY_GOAL if half else None)]
        rate_note = (f"{up['delivered_in_window']:,} of {phase.load.ok:,} leads' webhooks received within the "
                     f"{phase.load.seconds:.1f} s window of their creates; backlog (committed, not received) at the "
                     f"window's end {up['backlog_at_window_end']:,}, at most {up['max_backlog']:,}; "
                     f"{found['deliveries_retried']:,} deliveries retried. Goal (keeps up): >= {KEEP_UP_SHARE:g}x "
                     f"the creates/s and every event received within {DRAIN_BOUND_S:g} s of the window's end")
        rate_rows += [Row(RATE, f"deliveries/s at {phase.label}", "events/s", up["per_s"], RATE_BASELINE,
                          phase.load.throughput, rate_note, RATE_GOAL if half else None),
                      Row(RATE, f"drain at {phase.label}", "s", up["drain_s"], DRAIN_BASELINE, DRAIN_BOUND_S,
                          "from the window's end until the receiver had every lead's event (0: all within the "
                          "window)" if half else "", DRAIN_GOAL if half else None)]
    return latency_rows + rate_rows

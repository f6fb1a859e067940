"""Figure 2 under load: stage change -> trigger action while stage changes keep coming.

Figure 2 proper sends one change at a time. Here the changes come paced (an open loop) at half
the create throughput figure 1 measured, then at all of it: each one a ``PATCH`` moving a lead of
the bench's source to QUALIFIED, which fires the bench's trigger (add the lead to the bench's
group: the triggers worker hears the leads event, sends the command, the leads worker applies
it). Its latency runs from the PATCH answered to the group row visible in the leads database,
which the bench looks for every ``POLL_SECONDS`` for all the changes waiting at once (a GET per
lead and look, as figure 2 does, would add more load than it measures). The leads are made
beforehand with bulk creates and their events drained, so only the changes are measured.
Goal (issue 19): at half figure 1's rate, p99 <= the raw Kafka round trip's p99 + 50 ms.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import psycopg
import requests

from crm_devstack.bench.load import LoadResult, Operation, Unexpected, percentile, run_load
from crm_devstack.bench.report import Goal, Row
from crm_devstack.errors import DevstackError

if TYPE_CHECKING:
    from crm_devstack.bench.figures import Bench

POLL_SECONDS = 0.01
BASELINE = "raw Kafka produce->consume"
GOAL = Goal(at_most=True, factor=1.0, plus=50.0, source="issue 19")  # ms over the raw p99
RATES = (("half figure 1's rate", 0.5), ("figure 1's rate", 1.0))
LATENCY_ROOM = 4.0  # seconds a PATCH may take before the paced loop runs out of tasks
BULK_ITEMS = 100  # a call well inside the gateway's upstream timeout on a busy machine


class GroupWatch:
    """Notes when each expected lead shows up in a group (``record_groups`` of the leads
    database), looking for every lead still awaited in one query every ``interval`` seconds."""

    def __init__(self, dsn: str, group_id: str, interval: float = POLL_SECONDS) -> None:
        self.group_id = group_id
        self.interval = interval
        self.latencies: dict[str, float] = {}
        self.looks = 0
        self._waiting: dict[str, float] = {}  # lead id -> when its change was answered (perf_counter)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._thread = threading.Thread(target=self._run, name="bench-group-watch", daemon=True)
        self._thread.start()

    def expect(self, lead_id: str, accepted: float) -> None:
        with self._lock:
            self._waiting[lead_id] = accepted

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    waiting = list(self._waiting)
                if waiting:
                    found = self._conn.execute(
                        "SELECT record_id FROM record_groups WHERE group_id = %s AND record_id = ANY(%s)",
                        (self.group_id, waiting)).fetchall()
                    seen = time.perf_counter()
                    self.looks += 1
                    with self._lock:
                        for (lead_id,) in found:
                            accepted = self._waiting.pop(lead_id, None)
                            if accepted is not None:
                                self.latencies[lead_id] = seen - accepted
                self._stop.wait(self.interval)
        except BaseException as exc:  # noqa: BLE001 - reported by wait_all
            self._error = exc

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._error is not None:
                raise DevstackError(f"looking for the trigger's group rows failed: {self._error}")
            with self._lock:
                left = len(self._waiting)
            if not left:
                return
            if time.monotonic() > deadline:
                raise DevstackError(f"the trigger did not add {left} of the changed leads to its group within "
                                    f"{timeout:g} s")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._conn.close()


def leads_of_the_bench_source(bench: Bench, count: int) -> list[str]:
    """``count`` new leads of the bench's source (their stage changes arm the trigger), made with
    bulk creates of ``BULK_ITEMS``, one call after another."""
    url = f"{bench.gateway}/v1/leads/bulk"
    headers = bench._with_token()
    ids: list[str] = []
    call = uuid.uuid4().hex[:12]
    while len(ids) < count:
        items = [{"key": f"bench-paced-{call}-{len(ids) + i}", "title": f"Bench paced trigger {len(ids) + i}",
                  "source_id": bench.source_id} for i in range(min(BULK_ITEMS, count - len(ids)))]
        r = requests.post(url, json={"action": "create", "items": items}, headers=headers, timeout=120)
        if r.status_code != 200:
            raise DevstackError(f"bulk creating leads for figure 2 under load answered {r.status_code}: {r.text[:500]}")
        results = r.json()["results"]
        failed = [item for item in results if item["status"] != "created"]
        if failed:
            raise DevstackError(f"bulk creating leads for figure 2 under load: an item failed: {failed[0]}")
        ids += [item["id"] for item in results]
    return ids


def open_loop_tasks(rate: float, floor: int) -> int:
    """Tasks for an open loop at ``rate`` operations a second: enough for every operation due while
    earlier ones wait up to ``LATENCY_ROOM`` s for their answer (at least ``floor``, at most 512)."""
    return max(floor, min(512, math.ceil(rate * LATENCY_ROOM)))


def paced_load(operation: Operation, rate: float, seconds: float, concurrency: int) -> LoadResult:
    """``operation`` started at ``rate`` a second for ``seconds`` (an open loop, as long as the
    ``concurrency`` tasks keep up): figure 2 under load's changes, figure 12's creates."""
    return run_load(operation, concurrency=concurrency, seconds=seconds, rate=rate)


def paced_rates(full: float) -> list[tuple[str, float, float]]:
    """``(label, share, rate)`` of the paced phases: half and all of figure 1's ``full`` create rate."""
    return [(label, share, full * share) for label, share in RATES]


def _paced(bench: Bench, leads: list[str], rate: float, seconds: float, concurrency: int
           ) -> tuple[LoadResult, list[float], int]:
    """Stage changes at ``rate`` a second for ``seconds``; their latencies to the group row."""
    qualified = bench.stages["QUALIFIED"]["id"]
    watch = GroupWatch(bench.dsn("leads"), bench.group_id)
    try:
        async def change(session: aiohttp.ClientSession, n: int) -> None:
            if n >= len(leads):
                raise Unexpected("more changes than leads made for them")
            async with session.patch(f"{bench.gateway}/v1/leads/{leads[n]}", json={"stage_id": qualified},
                                     headers=bench.writer) as response:
                data = await response.read()
                if response.status != 200:
                    raise Unexpected(f"status {response.status}", data)
            watch.expect(leads[n], time.perf_counter())

        load = paced_load(change, rate, seconds, concurrency)
        watch.wait_all(timeout=max(120.0, 10 * seconds))
        return load, list(watch.latencies.values()), watch.looks
    finally:
        watch.close()


def figure(bench: Bench) -> list[Row]:
    created = bench._concurrent_creates
    if created is None:
        raise DevstackError("figure 2 under load paces its changes at figure 1's create rate: run figure 1 first")
    full = created.throughput
    seconds = bench.plan.load_seconds
    baseline = bench.round_trips()
    raw_p99 = 1000 * percentile(baseline, 99)
    bench.say(f"figure 2 under load: stage changes -> trigger action, paced at half and at all of figure 1's "
              f"{full:,.1f} creates/s, {seconds:g} s each")
    # An open loop: enough tasks for every change due while earlier ones wait up to LATENCY_ROOM s for
    # their answer; enough leads for every change the loop can start (one per task past the deadline).
    concurrencies = {label: open_loop_tasks(rate, bench.plan.concurrency) for label, _share, rate in paced_rates(full)}
    needed = {label: math.ceil(rate * seconds) + concurrencies[label] + 5 for label, _share, rate in paced_rates(full)}
    bench.say(f"  {sum(needed.values()):,} leads of the bench's source, in bulk creates of {BULK_ITEMS}")
    leads = leads_of_the_bench_source(bench, sum(needed.values()))
    rows: list[Row] = []
    details: dict[str, Any] = {"raw_kafka_p99_ms": round(raw_p99, 3), "poll_seconds": POLL_SECONDS}
    for label, share, rate in paced_rates(full):
        bench.settle(f"figure 2 under load, before {label}")
        mine, leads = leads[:needed[label]], leads[needed[label]:]
        bench.say(f"  {label}: {rate:,.1f} changes/s, open loop, up to {concurrencies[label]} at a time")
        load, latencies, looks = _paced(bench, mine, rate, seconds, concurrencies[label])
        achieved = load.throughput
        p50, p99 = 1000 * percentile(latencies, 50), 1000 * percentile(latencies, 99)
        bench.say(f"    {load.ok:,} changes at {achieved:,.1f}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                  f"(raw Kafka p99 {raw_p99:.1f} ms)")
        key = "half_rate" if share < 1 else "full_rate"
        details[key] = {"target_per_s": round(rate, 2), "achieved_per_s": round(achieved, 2), "looks": looks,
                        "changes": load.summary(),
                        "trigger_ms": {"count": len(latencies), "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                                       "p90_ms": round(1000 * percentile(latencies, 90), 3),
                                       "max_ms": round(1000 * max(latencies), 3),
                                       "samples_ms": [round(1000 * v, 2) for v in latencies]}}
        kept = "" if achieved >= 0.9 * rate else f"; the platform did not keep the pace ({achieved:,.1f}/s)"
        note = (f"{rate:,.1f} stage changes/s ({share:g}x figure 1's {full:,.1f} creates/s), open loop, "
                f"{load.ok:,} changes: PATCH answered -> the trigger's group row in the leads database (looked for "
                f"every {1000 * POLL_SECONDS:g} ms){kept}")
        rows += [Row("trigger", f"p50 at {label}", "ms", p50, BASELINE, 1000 * percentile(baseline, 50), note),
                 Row("trigger", f"p99 at {label}", "ms", p99, BASELINE, raw_p99,
                     goal=GOAL if share < 1 else None)]
    bench.details["trigger_under_load"] = details
    bench.settle("figure 2 under load")
    return rows

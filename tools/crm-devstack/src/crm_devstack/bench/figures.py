"""The figures of ``make bench``, each measured next to its baseline on the running platform.

``Bench`` holds what the figures share (the platform, the tokens, the catalogue entries the
bench made for itself); each ``figure_*`` method measures and returns its table rows, and
keeps its raw numbers in ``details`` for the JSON report.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
import requests

from crm_devstack.bench.kafka_probes import Backlog, BacklogState, EventClock, raw_round_trips
from crm_devstack.bench.load import (
    LoadResult,
    Operation,
    Unexpected,
    percentile,
    run_coroutine,
    run_load,
    stage_changes,
)
from crm_devstack.bench.report import Goal, Row
from crm_devstack.errors import DevstackError
from crm_devstack.platform import Platform
from crm_devstack.postgres import PostgresCluster
from crm_devstack.stack import SERVICES
from crm_events.topics import LEADS

DEFAULT_SCALE = 0.1
"""BENCH_SCALE when none is given: data sets of 10k and 100k records, every timed phase full length."""

CONSISTENCY_TOKEN = "Consistency-Token"  # noqa: S105 - a header name (crm_gateway.consistency)
# Figure 7's reads: cross-service (linking learns of leads from Kafka, so it must wait for the new
# lead's event) and same-service (the leads service reads no leads events: nothing to wait for).
RYW_VARIANTS = {"cross-service": ("/v1/leads/{id}/contacts", "linking"), "same-service": ("/v1/leads/{id}", "leads")}
RYW_BASELINE = "same GET right after its POST, no token"
# Figure 5: bulk creates of this many leads a call, this many calls at a time; issue 17's goal.
BULK_CREATE_ITEMS = 200
BULK_CREATE_CALLS = 4
BULK_CREATE_GOAL_RATIO = 10.0
RYW_GOAL_RATIO = 1.2  # issue 14: p50 <= 1.2x, p99 <= 1.2x + the outbox->Kafka p99
# Issue 19's goals, each against its figure's baseline from the same run.
CREATE_THROUGHPUT_GOAL = Goal(at_most=False, factor=0.25, source="issue 19")  # of the bare insert's
CREATE_P50_GOAL = Goal(at_most=True, factor=4.0, source="issue 19")
LIST_P50_GOAL = Goal(at_most=True, factor=5.0, source="issue 19")  # at 100k and at 1M
CATCHUP_GOAL = Goal(at_most=True, factor=0.5, source="issue 19")  # drain time / the load that built it


@dataclass(frozen=True)
class BenchPlan:
    """How big and how long. ``scale`` sizes the list data sets (1 = 100k and 1M records);
    below the default it also shortens every timed phase, for quick runs and the smoke test."""

    scale: float = DEFAULT_SCALE
    concurrency: int = 16
    web_concurrency: int = 2
    web_threads: int = 4
    # Extra environment for every platform process (``--env``), for before/after experiments.
    platform_env: tuple[tuple[str, str], ...] = ()

    @property
    def time_factor(self) -> float:
        return min(1.0, self.scale / DEFAULT_SCALE)

    @property
    def load_seconds(self) -> float:
        return max(2.0, 10.0 * self.time_factor)

    @property
    def warmup_seconds(self) -> float:
        return max(0.5, 2.0 * self.time_factor)

    @property
    def samples(self) -> int:
        return max(10, round(100 * self.time_factor))

    @property
    def catchup_seconds(self) -> float:
        return max(2.0, 60.0 * self.time_factor)

    @property
    def list_sizes(self) -> tuple[int, int]:
        return max(100, round(100_000 * self.scale)), max(1000, round(1_000_000 * self.scale))


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _latency_rows(figure: str, values: list[float], baseline: str, baseline_values: list[float],
                  note: str = "") -> list[Row]:
    return [Row(figure, q, "ms", _ms(percentile(values, n)), baseline, _ms(percentile(baseline_values, n)),
                note if q == "p50" else "") for q, n in (("p50", 50), ("p99", 99))]


class Bench:
    """The figures, on a running platform and the baseline apps."""

    def __init__(self, plan: BenchPlan, platform: Platform, postgres: PostgresCluster, bootstrap: str,
                 baseline_urls: dict[str, str], db_prefix: str, say: Callable[[str], None], *,
                 baseline_pids: dict[str, int] | None = None, kafka_pid: int | None = None) -> None:
        self.plan = plan
        self.platform = platform
        self.postgres = postgres
        self.bootstrap = bootstrap
        self.baseline_urls = baseline_urls
        self.baseline_pids = dict(baseline_pids or {})  # the baseline apps' gunicorn masters, for figure 11
        self.kafka_pid = kafka_pid  # the broker's, when the bench knows it (figure 11 counts its CPU)
        self.db_prefix = db_prefix
        self.say = say
        self.gateway = platform.gateway_url
        self.admin = platform.auth(("admin",), user="bench-admin", office="bench-office")
        self.writer = platform.auth(("marketing",), user="bench-user", office="bench-office")
        self.details: dict[str, Any] = {}
        self.created_ids: list[str] = []
        self.import_offices: list[str] = []  # figure 9's offices, for clean_up
        self.stages: dict[str, dict[str, Any]] = {}
        self.source_id = ""
        self.group_id = ""
        self.trigger_id = ""
        self._round_trips: list[float] | None = None
        self._concurrent_creates: LoadResult | None = None

    # -- helpers ------------------------------------------------------------------------------------

    def dsn(self, service: str) -> str:
        return self.postgres.dsn(f"{self.db_prefix}_{service}")

    def call(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        return requests.request(method, self.gateway + path, headers=headers or self.admin, timeout=30, **kw)

    def _until(self, what: str, attempt: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = attempt()
            if last and not isinstance(last, requests.Response):
                return last
            time.sleep(0.2)
        detail = f"{last.status_code} {last.text[:500]}" if isinstance(last, requests.Response) else repr(last)
        raise DevstackError(f"timed out after {timeout:g} s waiting for {what}; last answer: {detail}")

    def _post_when_known(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """POST once the receiving service's catalogue copy knows the ids in ``body``."""
        def attempt() -> Any:
            r = self.call("POST", path, json=body)
            if r.status_code == 201:
                return r.json()
            if r.status_code in (409, 422):
                return r
            raise DevstackError(f"POST {path} answered {r.status_code}: {r.text[:500]}")
        return dict(self._until(what, attempt))

    def round_trips(self) -> list[float]:
        if self._round_trips is None:
            self.say(f"raw Kafka produce -> consume round trips ({self.plan.samples}, one at a time)")
            self._round_trips = raw_round_trips(self.bootstrap, self.plan.samples)
            self.details["kafka_round_trip_ms"] = _summary(self._round_trips)
        return self._round_trips

    def settle(self, what: str) -> float:
        """Wait until the workers have caught up with everything so far (no lag, empty outboxes), so
        the next figure does not pay for the previous one's backlog; returns the seconds it took."""
        started = time.monotonic()
        backlog = Backlog(self.bootstrap, {s: self.dsn(s) for s in SERVICES})
        backlog.wait_drained(backlog.groups(), timeout=600)
        took = time.monotonic() - started
        self.say(f"  (workers caught up after {what} in {took:.1f} s)")
        self.details.setdefault("settle_seconds", {})[what] = round(took, 2)
        return took

    def clean_up(self) -> None:
        """Delete the bench's trigger, its bulk-loaded list rows (which had no events) and figure 9's imports."""
        if self.trigger_id:
            self.call("DELETE", f"/v1/triggers/{self.trigger_id}")
        with psycopg.connect(self.dsn("leads"), autocommit=True) as conn:
            conn.execute("DELETE FROM leads WHERE office_id LIKE 'bench-list-%'")
        if self.import_offices:
            from crm_devstack.bench import import_run

            import_run.clean_up(self)

    # -- set-up ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        """The bench's own catalogue entries and trigger, once every service's copy knows them."""
        self.say("waiting for the leads service's copy of the catalogue (default stage)")
        self._post_when_known("/v1/leads", {"title": "bench probe"}, "a default lead stage in the leads service")
        self.stages = {s["code"]: s for s in self.call("GET", "/v1/lead-stages").json()["items"]}
        for code in ("NEW", "CONTACTED", "QUALIFIED"):
            if code not in self.stages:
                raise DevstackError(f"the starter configuration has no lead stage {code}")
        tag = uuid.uuid4().hex[:8].upper()
        self.source_id = self._post_when_known("/v1/lead-tables/sources",
                                               {"names": {"en": f"Bench {tag}"}, "code": f"BENCH{tag}"},
                                               "a bench source")["id"]
        self.group_id = self._post_when_known("/v1/lead-tables/groups",
                                              {"names": {"en": f"Bench qualified {tag}"}, "code": f"BQ{tag}"},
                                              "a bench group")["id"]
        # Only the bench's own source arms it, so the other figures' leads never fire it.
        self.trigger_id = self._post_when_known("/v1/triggers", {
            "name": f"bench qualified -> group {tag}", "kind": "lead", "active": True,
            "event": {"type": "stage_changed", "stage_id": self.stages["QUALIFIED"]["id"]},
            "conditions": {"source_id": self.source_id},
            "actions": [{"type": "add_to_group", "group_id": self.group_id}]}, "the bench trigger")["id"]
        self._post_when_known("/v1/leads", {"title": "bench probe", "source_id": self.source_id},
                              "the bench source in the leads service")

    # -- 1 and 5: creation ---------------------------------------------------------------------------

    def create_operation(self, url: str, headers: dict[str, str], keep_ids: bool) -> Operation:
        """POST a new lead-shaped JSON body to ``url``, expecting 201 (the gateway or a baseline app)."""
        async def create(session: aiohttp.ClientSession, n: int) -> None:
            body = {"title": f"Bench lead {n}", "description": "created by make bench"}
            async with session.post(url, json=body, headers=headers) as response:
                data = await response.read()
                if response.status != 201:
                    raise Unexpected(f"status {response.status}", data)
                created = json.loads(data)
                if keep_ids:
                    self.created_ids.append(created["id"])
        return create

    def _load(self, what: str, operation: Operation, concurrency: int, *, keep_cookies: bool = False) -> LoadResult:
        plan = self.plan
        self.say(f"  {what}: {concurrency} connection(s), {plan.warmup_seconds:g} s warm-up + "
                 f"{plan.load_seconds:g} s")
        result = run_load(operation, concurrency=concurrency, seconds=plan.load_seconds,
                          warmup=plan.warmup_seconds, keep_cookies=keep_cookies)
        self.say(f"    {result.throughput:,.1f}/s, p50 {_ms(result.p(50)):.1f} ms, p99 {_ms(result.p(99)):.1f} ms")
        return result

    def figure_create(self) -> list[Row]:
        self.say("figure 1: create-lead through the gateway vs the bare baseline apps")
        n = self.plan.concurrency
        json_headers = {"Content-Type": "application/json"}
        bare_json = self._load("bare gunicorn + Flask JSON endpoint",
                               self.create_operation(self.baseline_urls["json"], json_headers, False), n)
        bare_insert = self._load("bare Flask + SQLAlchemy one-row insert",
                                 self.create_operation(self.baseline_urls["insert"], json_headers, False), n)
        gateway = self._load("POST /v1/leads through the gateway",
                             self.create_operation(f"{self.gateway}/v1/leads", self.writer, True), n)
        # The same with the consistency token kept (the crm_ct cookie, as browsers and cookie-keeping
        # clients do): no token means the gateway asks the catalogue for its latest writes each time.
        kept = self._load("POST /v1/leads through the gateway, consistency token kept",
                          self.create_operation(f"{self.gateway}/v1/leads", self.writer, True), n,
                          keep_cookies=True)
        self._concurrent_creates = gateway
        self.details["create"] = {"gateway": gateway.summary(), "gateway_token_kept": kept.summary(),
                                  "bare_json": bare_json.summary(), "bare_insert": bare_insert.summary()}
        rows = []
        for name, base in (("bare Flask JSON", bare_json), ("bare Flask+SQLAlchemy insert", bare_insert)):
            goals = (CREATE_THROUGHPUT_GOAL, CREATE_P50_GOAL) if base is bare_insert else (None, None)
            rows.append(Row("create", "throughput", "req/s", gateway.throughput, name, base.throughput,
                            f"{n} concurrent connections, closed loop, no token" if base is bare_json else "",
                            goals[0]))
            rows.append(Row("create", "p50", "ms", _ms(gateway.p(50)), name, _ms(base.p(50)), goal=goals[1]))
            rows.append(Row("create", "p99", "ms", _ms(gateway.p(99)), name, _ms(base.p(99))))
        insert = bare_insert
        rows.append(Row("create", "throughput, token kept", "req/s", kept.throughput,
                        "bare Flask+SQLAlchemy insert", insert.throughput,
                        "the client keeps the crm_ct cookie (browsers, requests.Session)"))
        rows.append(Row("create", "p50, token kept", "ms", _ms(kept.p(50)), "bare Flask+SQLAlchemy insert",
                        _ms(insert.p(50))))
        rows.append(Row("create", "p99, token kept", "ms", _ms(kept.p(99)), "bare Flask+SQLAlchemy insert",
                        _ms(insert.p(99))))
        return rows

    def bulk_create_operation(self, items: int) -> Operation:
        """POST /v1/leads/bulk with ``items`` new leads (each with its own idempotency key), every
        item expected ``created``."""
        url = f"{self.gateway}/v1/leads/bulk"
        headers = self._with_token()

        async def create(session: aiohttp.ClientSession, n: int) -> None:
            call = uuid.uuid4().hex
            body = {"action": "create", "items": [
                {"key": f"bench-{call}-{i}", "title": f"Bench bulk lead {n}.{i}",
                 "description": "created by make bench"} for i in range(items)]}
            async with session.post(url, json=body, headers=headers) as response:
                data = await response.read()
                if response.status != 200:
                    raise Unexpected(f"status {response.status}", data)
                failed = [r for r in json.loads(data)["results"] if r["status"] != "created"]
                if failed:
                    raise Unexpected(f"an item was not created: {failed[0]}", data)
        return create

    def _with_token(self) -> dict[str, str]:
        """The writer's headers with the Consistency-Token of a write of its own, as an importing
        client (the console, any client keeping the crm_ct cookie) sends: without any token the
        gateway makes a bulk call wait for every service's latest writes first (its items are
        refused inside a 200, so a refusal cannot be asked again), which right after figure 1's
        load is most of the 5 s wait."""
        r = self.call("POST", "/v1/leads", headers=self.writer, json={"title": "bench token probe"})
        if r.status_code != 201 or CONSISTENCY_TOKEN not in r.headers:
            raise DevstackError(f"POST /v1/leads answered {r.status_code} without a token: {r.text[:300]}")
        return {**self.writer, CONSISTENCY_TOKEN: r.headers[CONSISTENCY_TOKEN]}

    def figure_bulk(self) -> list[Row]:
        self.say("figure 5: bulk creation (POST /v1/leads/bulk create vs one-at-a-time POSTs)")
        sequential = self._load("POST /v1/leads one at a time",
                                self.create_operation(f"{self.gateway}/v1/leads", self.writer, True), 1)
        concurrent = self._concurrent_creates
        if concurrent is None:
            raise DevstackError("figure 5 reuses figure 1's concurrent creates: run figure 1 first")
        bulk_create = self._load(f"POST /v1/leads/bulk create, {BULK_CREATE_ITEMS} items a call",
                                 self.bulk_create_operation(BULK_CREATE_ITEMS), BULK_CREATE_CALLS)
        bulk_rate = bulk_create.throughput * BULK_CREATE_ITEMS
        ratio = bulk_rate / sequential.throughput if sequential.throughput else 0.0
        self.say(f"    {bulk_rate:,.0f} records/s: {ratio:.1f}x the one-at-a-time POSTs (goal >= "
                 f"{BULK_CREATE_GOAL_RATIO:g}x)")
        bulk_stage, single_stage = self._bulk_stage_change()
        self.details["bulk"] = {"concurrent_posts": concurrent.summary(), "sequential_posts": sequential.summary(),
                                "bulk_create": {**bulk_create.summary(), "items_per_call": BULK_CREATE_ITEMS,
                                                "calls_at_a_time": BULK_CREATE_CALLS,
                                                "records_per_s": round(bulk_rate, 2),
                                                "ratio_to_sequential": round(ratio, 2),
                                                "goal_ratio": BULK_CREATE_GOAL_RATIO,
                                                "goal_met": ratio >= BULK_CREATE_GOAL_RATIO},
                                "bulk_set_stage": bulk_stage, "single_patch": single_stage}
        return [
            Row("bulk", "create records/s", "records/s", bulk_rate, "1-at-a-time POSTs", sequential.throughput,
                f"POST /v1/leads/bulk action create, {BULK_CREATE_ITEMS} items a call (each with its idempotency "
                f"key), {BULK_CREATE_CALLS} calls at a time, with the client's consistency token. "
                f"For comparison, {self.plan.concurrency} concurrent single POSTs (figure 1): "
                f"{concurrent.throughput:,.0f} records/s",
                Goal(at_most=False, factor=BULK_CREATE_GOAL_RATIO, source="issue 17")),
            Row("bulk", "stage change records/s", "records/s", bulk_stage["records_per_s"],
                "concurrent single PATCHes", single_stage["records_per_s"],
                f"POST /v1/leads/bulk set_stage, {bulk_stage['ids_per_call']} ids a call, 4 calls at a time, with "
                "the client's consistency token"),
        ]

    def _bulk_stage_change(self) -> tuple[dict[str, Any], dict[str, Any]]:
        least = 8 * 10  # 4 bulk calls of the smallest chunk, as many leads for the single PATCHes
        missing = least - len(set(self.created_ids))
        if missing > 0:  # a tiny scale on a busy machine: figures 1 and 5 created too few
            self.say(f"  {missing} more leads for the stage changes (figures 1 and 5 created too few)")
            run_load(self.create_operation(f"{self.gateway}/v1/leads", self.writer, True),
                     concurrency=self.plan.concurrency, seconds=600, max_operations=missing)
            self.details["bulk_leads_topped_up"] = missing
        ids = list(dict.fromkeys(self.created_ids))
        # Half the leads for the bulk calls, half for single PATCHes: every change is a real move.
        bulk_ids, single_ids = ids[: len(ids) // 2], ids[len(ids) // 2:]
        # A list page's worth of ids a call (what a user selects), not MAX_BULK: 4 calls of 200 on
        # 2 busy cores outlast the gateway's 10 s upstream timeout (a 504 while the work commits).
        chunk = max(10, min(50, len(bulk_ids) // 4))
        chunks = [bulk_ids[i:i + chunk] for i in range(0, len(bulk_ids) - chunk + 1, chunk)]
        if len(chunks) < 4:
            raise DevstackError(f"figure 5 needs at least {8 * chunk} leads from figure 1, it has {len(ids)}")
        targets = [self.stages["CONTACTED"]["id"], self.stages["NEW"]["id"]]
        url = f"{self.gateway}/v1/leads"
        bulk_headers = self._with_token()

        # A call takes a chunk nobody else is moving and gives it back when done; each call on a
        # chunk moves it to the other stage than the last one, so every item really changes.
        free: asyncio.Queue[int] | None = None
        moves = [0] * len(chunks)

        async def bulk(session: aiohttp.ClientSession, k: int) -> None:
            nonlocal free
            if free is None:  # made inside the load generator's event loop
                free = asyncio.Queue()
                for i in range(len(chunks)):
                    free.put_nowait(i)
            i = await free.get()
            try:
                body = {"ids": chunks[i], "action": "set_stage", "stage_id": targets[moves[i] % 2]}
                async with session.post(f"{url}/bulk", json=body, headers=bulk_headers) as response:
                    data = await response.read()
                    if response.status != 200:
                        raise Unexpected(f"status {response.status}", data)
                    failed = [item for item in json.loads(data)["results"] if item["status"] != "ok"]
                    if failed:
                        raise Unexpected(f"an item failed: {failed[0]['error']}", data)
                moves[i] += 1
            finally:
                free.put_nowait(i)

        single = stage_changes(url, single_ids, targets, self.writer)

        bulk_result = self._load(f"POST /v1/leads/bulk set_stage, {chunk} ids a call", bulk, 4)
        single_result = self._load("PATCH /v1/leads/{id} stage_id", single, self.plan.concurrency)
        return ({**bulk_result.summary(), "ids_per_call": chunk,
                 "records_per_s": round(bulk_result.throughput * chunk, 2)},
                {**single_result.summary(), "records_per_s": round(single_result.throughput, 2)})

    # -- 2: stage change -> trigger action ------------------------------------------------------------

    def figure_trigger(self) -> list[Row]:
        samples = self.plan.samples
        self.say(f"figure 2: stage change accepted -> trigger's add_to_group visible through the API "
                 f"({samples} changes, one at a time)")
        baseline = self.round_trips()
        latencies = run_coroutine(self._trigger_samples(samples, warmup=3))
        self.say(f"    p50 {_ms(percentile(latencies, 50)):.1f} ms, p99 {_ms(percentile(latencies, 99)):.1f} ms "
                 f"(raw Kafka round trip p50 {_ms(percentile(baseline, 50)):.2f} ms)")
        self.details["trigger_ms"] = _summary(latencies)
        return _latency_rows("trigger", latencies, "raw Kafka produce->consume", baseline,
                             "PATCH answered -> first GET showing the group; 3 Kafka hops (leads event, "
                             "trigger command, leads applies) and 3 database commits in between")

    async def _trigger_samples(self, samples: int, warmup: int) -> list[float]:
        qualified = self.stages["QUALIFIED"]["id"]
        latencies: list[float] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for n in range(warmup + samples):
                async with session.post(f"{self.gateway}/v1/leads", headers=self.writer,
                                        json={"title": f"Bench trigger {n}", "source_id": self.source_id}) as r:
                    if r.status != 201:
                        raise DevstackError(f"creating a lead for figure 2 answered {r.status}: {await r.text()}")
                    lead_url = f"{self.gateway}/v1/leads/{(await r.json())['id']}"
                async with session.patch(lead_url, headers=self.writer, json={"stage_id": qualified}) as r:
                    if r.status != 200:
                        raise DevstackError(f"the stage change answered {r.status}: {await r.text()}")
                accepted = time.perf_counter()
                # The first firing also waits for the triggers worker to know the rule and the group.
                deadline = accepted + (120 if n == 0 else 30)
                while True:
                    async with session.get(lead_url, headers=self.writer) as r:
                        body = await r.json()
                    if self.group_id in body.get("group_ids", []):
                        break
                    if time.perf_counter() > deadline:
                        raise DevstackError(f"the trigger did not add lead {body.get('id')} to its group in time")
                if n >= warmup:
                    latencies.append(time.perf_counter() - accepted)
        return latencies

    # -- 3: the outbox ------------------------------------------------------------------------------------

    def figure_outbox(self) -> list[Row]:
        samples = self.plan.samples
        self.say(f"figure 3: outbox commit -> event on Kafka ({samples} creates, one at a time)")
        baseline = self.round_trips()
        clock = EventClock(self.bootstrap, LEADS)
        ids: list[str] = []
        try:
            async def run() -> None:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                    for n in range(samples):
                        async with session.post(f"{self.gateway}/v1/leads", headers=self.writer,
                                                json={"title": f"Bench outbox {n}"}) as r:
                            if r.status != 201:
                                raise DevstackError(f"create answered {r.status}: {await r.text()}")
                            ids.append((await r.json())["id"])
                        await asyncio.sleep(0.02)  # one event in flight at a time
            run_coroutine(run())
            with psycopg.connect(self.dsn("leads")) as conn:
                rows = conn.execute("SELECT event_id, created_at, sent_at FROM outbox "
                                    "WHERE topic = %s AND key = ANY(%s)", (LEADS, ids)).fetchall()
            if len(rows) != len(ids):
                raise DevstackError(f"expected {len(ids)} outbox rows for the created leads, found {len(rows)}")
            clock.wait_for([r[0] for r in rows], timeout=60)
        finally:
            clock.close()
        # Both clocks are this machine's wall clock: created_at is stamped by the leads api inside
        # the transaction (just before its commit), the arrival time by the bench's consumer.
        to_consumer = [clock.seen[event_id] - created.timestamp() for event_id, created, _sent in rows]
        to_ack = [(sent - created).total_seconds() for _eid, created, sent in rows if sent is not None]
        self.details["outbox"] = {"commit_to_consumer_ms": _summary(to_consumer),
                                  "commit_to_relay_ack_ms": _summary(to_ack)}
        self.say(f"    commit -> consumer p50 {_ms(percentile(to_consumer, 50)):.1f} ms, "
                 f"p99 {_ms(percentile(to_consumer, 99)):.1f} ms")
        return _latency_rows("outbox", to_consumer, "raw Kafka produce->consume", baseline,
                             f"outbox row created_at (in the api's transaction) -> a consumer of {LEADS} "
                             f"holds the event; relay's own view (to Kafka's ack) p50 "
                             f"{_ms(percentile(to_ack, 50)):.1f} ms")

    # -- 4: list pages at 100k and 1M ----------------------------------------------------------------------

    def figure_list(self) -> list[Row]:
        rows: list[Row] = []
        for size in self.plan.list_sizes:
            office = f"bench-list-{size}"
            self.say(f"figure 4: list page at {size:,} records (office {office})")
            self._bulk_load(office, size)
            rows += self._list_page(office, size)
        return rows

    def _bulk_load(self, office: str, size: int) -> None:
        """Rows straight into the leads database (generate_series), spread over the five starter
        stages; they bypass the outbox, so no other service hears of them (the list does not care)."""
        codes = ["NEW", "CONTACTED", "QUALIFIED", "CONVERTED", "DISQUALIFIED"]
        stages = [self.stages[c]["id"] for c in codes if c in self.stages]
        groups = [self.stages[c].get("stage_group_id") for c in codes if c in self.stages]
        started = time.monotonic()
        chunk = 100_000
        with psycopg.connect(self.dsn("leads"), autocommit=True) as conn:
            for first in range(1, size + 1, chunk):
                last = min(first + chunk - 1, size)
                conn.execute(
                    """
                    INSERT INTO leads (id, title, description, owner_id, office_id, stage_id, stage_group_id,
                                       stage_changed_at, attribute_ids, version, created_at, created_by,
                                       modified_at, modified_by)
                    SELECT md5(%(office)s || g)::uuid::text,
                           'Lead ' || substr(md5('t' || g), 1, 12),
                           '',
                           'bench-owner-' || (g %% 25),
                           %(office)s,
                           (%(stages)s::text[])[1 + g %% %(n)s],
                           (%(groups)s::text[])[1 + g %% %(n)s],
                           t.at, '[]', 1, t.at, 'bench-loader', t.at, 'bench-loader'
                    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g,
                         LATERAL (SELECT now() - make_interval(secs => g) AS at) AS t
                    """,
                    {"office": office, "stages": stages, "groups": groups, "n": len(stages),
                     "first": first, "last": last})
                self.say(f"    loaded {last:,} of {size:,} rows ({time.monotonic() - started:.0f} s)")
            conn.execute("ANALYZE leads")
        self.details.setdefault("list_load_seconds", {})[str(size)] = round(time.monotonic() - started, 1)

    def _list_page(self, office: str, size: int) -> list[Row]:
        group_id = self.stages["NEW"].get("stage_group_id")
        if not group_id:
            raise DevstackError("the NEW lead stage has no stage group; the list figure filters on one")
        reader = self.platform.auth(("marketing",), user="bench-reader", office=office)
        params = {"stage_group_id": group_id, "order_by": "title", "page_size": "50"}
        url = f"{self.gateway}/v1/leads"
        # The SQL the list endpoint runs for this page (crm_pipeline.queries + the keyset paginator):
        # visibility (the caller's office) AND the filter, ordered by the sort key then id, one row extra.
        sql = ("SELECT leads.*, coalesce(stage_sort.index, 0) AS stage_index FROM leads "
               "LEFT OUTER JOIN catalogue_view AS stage_sort ON stage_sort.id = leads.stage_id "
               "WHERE leads.office_id = %s AND leads.stage_group_id = %s "
               "ORDER BY leads.title ASC, leads.id ASC LIMIT 51")
        samples = self.plan.samples
        first_page: list[str] = []

        async def page(session: aiohttp.ClientSession, n: int) -> None:
            async with session.get(url, params=params, headers=reader) as response:
                data = await response.read()
                if response.status != 200:
                    raise Unexpected(f"status {response.status}", data)
                items = json.loads(data)["items"]
                if len(items) != 50:
                    raise Unexpected(f"{len(items)} items instead of 50", data)
                if not first_page:
                    first_page.extend(item["id"] for item in items)

        api = run_load(page, concurrency=1, seconds=600, warmup=0, max_operations=samples + 5)
        api_times = api.latencies[5:]
        sql_times: list[float] = []
        with psycopg.connect(self.dsn("leads")) as conn:
            for n in range(samples + 5):
                began = time.perf_counter()
                found = conn.execute(sql, (office, group_id)).fetchall()
                elapsed = time.perf_counter() - began
                if n == 0 and [r[0] for r in found[:50]] != first_page:
                    raise DevstackError("the SQL baseline does not return the API's page: the two queries differ")
                if n >= 5:
                    sql_times.append(elapsed)
            plan = conn.execute("EXPLAIN " + sql, (office, group_id)).fetchall()
        self.details.setdefault("list", {})[str(size)] = {
            "api_ms": _summary(api_times), "sql_ms": _summary(sql_times), "query": params, "sql": sql,
            "plan": [r[0] for r in plan]}
        self.say(f"    API p50 {_ms(percentile(api_times, 50)):.1f} ms, "
                 f"SQL p50 {_ms(percentile(sql_times, 50)):.2f} ms")
        label = f"{size / 1_000_000:g}M" if size >= 1_000_000 else f"{size / 1000:g}k" if size >= 1000 else str(size)
        return [Row("list", f"{q} @ {label}", "ms", _ms(percentile(api_times, n)), "same query in SQL",
                    _ms(percentile(sql_times, n)),
                    "stage_group_id filter, order_by=title, 50 a page, a marketing user of the office "
                    "(visibility applies); SQL from the same machine with psycopg" if q == "p50" else "",
                    LIST_P50_GOAL if q == "p50" else None)
                for q, n in (("p50", 50), ("p99", 99))]

    # -- 6: catch-up -------------------------------------------------------------------------------------------

    def figure_catchup(self) -> list[Row]:
        seconds = self.plan.catchup_seconds
        n = self.plan.concurrency
        self.say(f"figure 6: catch-up: every worker stopped, {seconds:g} s of creates + stage changes, "
                 "workers started, time until no lag and no outbox backlog")
        backlog = Backlog(self.bootstrap, {s: self.dsn(s) for s in SERVICES})
        groups = backlog.groups()
        if not groups:
            raise DevstackError("no consumer groups found on the broker: are the workers running?")
        workers = [f"{service}-worker" for service in SERVICES]
        for name in workers:  # all at once: each takes a moment to leave its consumer groups
            self.platform.processes.kill(name, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(self.platform.processes.is_running(n) for n in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in workers:
            self.platform.processes.stop(name)  # SIGKILL for any that did not stop in time
        qualified = self.stages["QUALIFIED"]["id"]
        moved: list[str] = []

        async def create_and_qualify(session: aiohttp.ClientSession, k: int) -> None:
            async with session.post(f"{self.gateway}/v1/leads", headers=self.writer,
                                    json={"title": f"Bench backlog {k}", "source_id": self.source_id}) as r:
                data = await r.read()
                if r.status != 201:
                    raise Unexpected(f"create status {r.status}", data)
                lead_id = json.loads(data)["id"]
            async with session.patch(f"{self.gateway}/v1/leads/{lead_id}", headers=self.writer,
                                     json={"stage_id": qualified}) as r:
                data = await r.read()
                if r.status != 200:
                    raise Unexpected(f"stage change status {r.status}", data)
            moved.append(lead_id)

        # The load the platform sustains with its workers running (figure 1's create rate, two
        # requests a lead): unpaced, the api alone would build a backlog it could never sustain.
        created = self._concurrent_creates
        rate = created.throughput / 2 if created is not None else None
        try:
            load = run_load(create_and_qualify, concurrency=n, seconds=seconds, rate=rate)
            pending = backlog.outbox()
            self.say(f"    {load.ok:,} creates + stage changes in {load.seconds:.1f} s; "
                     f"{pending:,} events waiting in the outboxes")
            at_rest = backlog.group_positions(groups)
        finally:
            started = time.monotonic()
            for name in workers:
                self.platform.processes.restart(name)
        history: list[tuple[float, BacklogState]] = []
        drained_at = backlog.wait_drained(groups, timeout=max(300.0, 10 * seconds), history=history)
        drain = drained_at - started
        largest = _largest_drain(started, at_rest, history)
        self.say(f"    the largest backlog, {largest['group']}'s: {largest['events']:,} events in "
                 f"{largest['seconds']:.1f} s, {largest['drained_per_s']:,.1f} events/s")
        with psycopg.connect(self.dsn("leads")) as conn:
            grouped = conn.execute("SELECT count(*) FROM record_groups WHERE group_id = %s AND record_id = ANY(%s)",
                                   (self.group_id, moved)).fetchone()
        applied = int(grouped[0]) if grouped else 0
        self.details["catchup"] = {"load": load.summary(), "paced_at_per_s": rate, "events_in_outboxes": pending,
                                   "drain_seconds": round(drain, 3), "trigger_actions_applied": applied,
                                   "stage_changes": len(moved), "groups": groups,
                                   "largest_backlog": largest}
        self.say(f"    drained in {drain:.1f} s; the trigger's action applied to {applied:,} of {len(moved):,} leads")
        if applied != len(moved):
            raise DevstackError(f"after the catch-up only {applied} of {len(moved)} trigger actions were applied")
        built = largest["events"] / load.seconds
        return [Row("catchup", "drain time", "s", drain, f"the {seconds:g} s of load that built it", load.seconds,
                    f"{len(moved):,} leads created and moved (paced at "
                    f"{'half figure 1' if rate else 'full speed'}'s create rate) = {pending:,} outbox events + "
                    f"the trigger commands they cause; includes the workers' start; all {applied:,} trigger "
                    "actions applied", CATCHUP_GOAL),
                Row("catchup", "largest backlog drained/s", "events/s", largest["drained_per_s"],
                    "the rate that backlog built up at", built,
                    f"the consumer group with the most events to apply, {largest['group']}: {largest['events']:,} "
                    f"events (the load's and those the drain itself published) from its first move to its last, "
                    f"{largest['seconds']:.1f} s (its position in its database, looked at {len(history)} times "
                    "over the drain); baseline: those events / the load's seconds")]

    # -- 7: read-your-writes --------------------------------------------------------------------------------

    def figure_read_your_writes(self) -> list[Row]:
        samples = self.plan.samples
        self.say(f"figure 7: read-your-writes: a GET carrying the Consistency-Token of the POST /v1/leads just "
                 f"before it vs the same GET right after its own POST without a token ({samples} of each, one "
                 "at a time)")
        self.settle("figure 7's start")
        times, unavailable = run_coroutine(self._ryw_samples(samples, warmup=3))
        outbox = self.details.get("outbox", {}).get("commit_to_consumer_ms", {})
        outbox_p99 = outbox.get("p99_ms") if isinstance(outbox, dict) else None
        details: dict[str, Any] = {"retried_503": unavailable,
                                   "outbox_to_consumer_p99_ms": outbox_p99}
        rows: list[Row] = []
        for variant, (path, service) in RYW_VARIANTS.items():
            what = f"GET {path} ({service})"
            token, plain = times[variant]["token"], times[variant]["no_token"]
            p50 = (_ms(percentile(token, 50)), _ms(percentile(plain, 50)))
            p99 = (_ms(percentile(token, 99)), _ms(percentile(plain, 99)))
            limit50 = RYW_GOAL_RATIO * p50[1]
            limit99 = RYW_GOAL_RATIO * p99[1] + outbox_p99 if outbox_p99 is not None else None
            goal = {"p50_limit_ms": round(limit50, 3), "p50_met": p50[0] <= limit50,
                    "p99_limit_ms": None if limit99 is None else round(limit99, 3),
                    "p99_met": None if limit99 is None else p99[0] <= limit99}
            details[variant.replace("-", "_")] = {"read": what, "token_ms": _summary(token),
                                                  "no_token_ms": _summary(plain), "goal": goal}
            self.say(f"    {variant}: with the token p50 {p50[0]:.1f} ms, p99 {p99[0]:.1f} ms; without p50 "
                     f"{p50[1]:.1f} ms, p99 {p99[1]:.1f} ms")
            p50_note = (f"write POST /v1/leads, read {what} with the write's Consistency-Token; baseline: the same "
                        "GET with no token right after its own POST (the gateway waits for every committed change "
                        "instead); goals (issue 14): p50 <= 1.2x, p99 <= 1.2x + figure 3's p99")
            if outbox_p99 is None:
                p99_note = (f"goal p99 <= {RYW_GOAL_RATIO:g}x + outbox->Kafka p99 (figure 3): not measured in this "
                            "run, no limit")
                p99_goal = None
            else:
                p99_note = f"the goal's + {outbox_p99:.1f} ms: figure 3's p99 (outbox -> Kafka) in this run"
                p99_goal = Goal(at_most=True, factor=RYW_GOAL_RATIO, plus=float(outbox_p99), source="issue 14")
            rows += [Row("ryw", f"p50 {variant}", "ms", p50[0], RYW_BASELINE, p50[1], p50_note,
                         Goal(at_most=True, factor=RYW_GOAL_RATIO, source="issue 14")),
                     Row("ryw", f"p99 {variant}", "ms", p99[0], RYW_BASELINE, p99[1], p99_note, p99_goal)]
        self.details["read_your_writes"] = details
        return rows

    async def _ryw_create(self, session: aiohttp.ClientSession, title: str) -> tuple[str, str]:
        """POST /v1/leads; the new lead's id and the answer's consistency token."""
        async with session.post(f"{self.gateway}/v1/leads", headers=self.writer, json={"title": title}) as r:
            data = await r.read()
            if r.status != 201:
                raise DevstackError(f"creating a lead for figure 7 answered {r.status}: {data[:500]!r}")
            token = r.headers.get(CONSISTENCY_TOKEN)
        if not token:
            raise DevstackError(f"POST /v1/leads answered without a {CONSISTENCY_TOKEN} header")
        return str(json.loads(data)["id"]), token

    async def _ryw_read(self, session: aiohttp.ClientSession, path: str, token: str | None,
                        unavailable: dict[str, int]) -> float:
        """Seconds until ``GET path`` (with ``token``, or none) answers 200. A 503 (not consistent
        within the gateway's wait) is asked again after its Retry-After and counted, its time
        included; anything else is a broken figure (a 404 for the lead just written above all)."""
        headers = {**self.writer, CONSISTENCY_TOKEN: token} if token else self.writer
        began = time.perf_counter()
        retries = 0
        while True:
            async with session.get(f"{self.gateway}{path}", headers=headers) as r:
                data = await r.read()
                if r.status == 200:
                    return time.perf_counter() - began
                retry_after = r.headers.get("Retry-After", "1")
            if r.status != 503 or retries == 5:
                raise DevstackError(f"GET {path} ({'with' if token else 'without'} a consistency token) answered "
                                    f"{r.status}: {data[:500]!r}")
            retries += 1
            unavailable["token" if token else "no_token"] += 1
            await asyncio.sleep(float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 1.0)

    async def _ryw_samples(self, samples: int, warmup: int
                           ) -> tuple[dict[str, dict[str, list[float]]], dict[str, int]]:
        """Per variant, the latencies of reads right after the write of the lead they read: with the
        write's token, and without one (the gateway then waits for every change committed so far).
        Both read under the same load (the write's events fanning out); the order alternates."""
        times: dict[str, dict[str, list[float]]] = {v: {"token": [], "no_token": []} for v in RYW_VARIANTS}
        unavailable = {"token": 0, "no_token": 0}
        # No cookie jar: a request carries a token only when this figure puts it in the header.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            for n in range(warmup + samples):
                for variant, (path, _service) in RYW_VARIANTS.items():
                    kinds = ("token", "no_token") if n % 2 == 0 else ("no_token", "token")
                    for kind in kinds:
                        lead_id, token = await self._ryw_create(session, f"Bench read-your-writes {variant} {n}")
                        took = await self._ryw_read(session, path.format(id=lead_id),
                                                    token if kind == "token" else None, unavailable)
                        if n >= warmup:
                            times[variant][kind].append(took)
        return times, unavailable

    # -- 8: the console's board page -------------------------------------------------------------------

    def figure_import(self) -> list[Row]:
        """An import of 100,000 leads vs the same rows as a script's bulk calls (crm_devstack.bench.import_run)."""
        from crm_devstack.bench import import_run

        return import_run.figure(self)

    def figure_board(self) -> list[Row]:
        """The console's board of 500 cards vs the API calls it makes (crm_devstack.bench.board_page)."""
        from crm_devstack.bench import board_page

        return board_page.figure(self)

    def figure_trigger_under_load(self) -> list[Row]:
        """Figure 2 with stage changes paced at half and at all of figure 1's create rate
        (crm_devstack.bench.trigger_load); after figure 1."""
        from crm_devstack.bench import trigger_load

        return trigger_load.figure(self)

    def figure_webhooks(self) -> list[Row]:
        """Figures 12 and 13: a lead's commit -> its webhook on a loopback receiver, and deliveries/s
        against the creates/s, creates paced as figure 2 under load (crm_devstack.bench.webhook_load);
        after figure 1."""
        from crm_devstack.bench import webhook_load

        return webhook_load.figure(self)

    def figure_cpu(self) -> list[Row]:
        """CPU per create and per stage change by part vs the bare insert's (crm_devstack.bench.cpu)."""
        from crm_devstack.bench import cpu

        return cpu.figure(self)


def _largest_drain(started: float, at_rest: dict[str, int],
                   history: list[tuple[float, BacklogState]]) -> dict[str, Any]:
    """The consumer group that had the most events to apply in the catch-up (the relays publish
    the outboxes only once the workers are back, so the backlog builds on Kafka during the drain)
    and how fast it applied them: its position in its database, summed over partitions, from the
    last look before it moved to the first look at its final position."""
    if not history:
        raise DevstackError("the drain was never looked at")
    final = history[-1][1].positions
    consumed = {group: final.get(group, origin) - origin for group, origin in at_rest.items()}
    if not consumed or max(consumed.values()) <= 0:
        raise DevstackError(f"no consumer group applied anything in the catch-up: {consumed}")
    group = max(consumed, key=lambda g: consumed[g])
    origin, last = at_rest[group], final[group]
    start, end = started, None
    series = []
    for seen_at, state in history:
        position = state.positions.get(group, origin)
        series.append([round(seen_at - started, 2), position - origin, state.group_lag.get(group)])
        if position == origin:
            start = seen_at  # not moved yet: its worker is starting, joining its group, or its relay publishing
        elif end is None and position == last:
            end = seen_at
    seconds = max((end if end is not None else history[-1][0]) - start, 1e-3)
    return {"group": group, "events": consumed[group], "seconds": round(seconds, 3),
            "drained_per_s": consumed[group] / seconds, "started_moving_after_s": round(start - started, 2),
            "consumed_by_group": consumed, "series_s_events_lag": series}


def _summary(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50_ms": round(_ms(percentile(values, 50)), 3),
            "p90_ms": round(_ms(percentile(values, 90)), 3), "p99_ms": round(_ms(percentile(values, 99)), 3),
            "max_ms": round(_ms(max(values)), 3), "samples_ms": [round(_ms(v), 2) for v in values]}

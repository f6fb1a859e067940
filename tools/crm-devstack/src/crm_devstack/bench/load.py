"""The load generator: a closed loop of N concurrent connections on aiohttp's asyncio client.

Each of ``concurrency`` tasks runs one operation after another over a shared keep-alive
connection pool (at most ``concurrency`` connections) until the time is up; the latency of
every operation that started after the warm-up is kept. An operation is a coroutine that
gets the client session and raises ``Unexpected`` (or any aiohttp error) when the answer is
wrong, so a scenario can be one request or a short sequence (create, then change the stage).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import numpy

T = TypeVar("T")

Operation = Callable[[aiohttp.ClientSession, int], Awaitable[None]]
"""One unit of work: ``(session, sequence number)``; raises when it did not succeed."""


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` (linear between the closest ranks)."""
    if not values:
        raise ValueError("no values to take a percentile of")
    return float(numpy.percentile(values, q))


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a fresh event loop and return its result.

    The loop lives in a thread of its own, so the bench also works when the calling thread
    already runs a loop (``asyncio.run`` refuses then): pytest runs the bench smoke test in
    the same process as the console's browser tests, whose Playwright sync session keeps
    its loop set on the main thread.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-loop") as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Unexpected(aiohttp.ClientError):
    """A response that is not the one the scenario expects; counted under ``what``."""

    def __init__(self, what: str, body: bytes = b"") -> None:
        super().__init__(f"{what}: {body[:300]!r}")
        self.what = what


def stage_changes(records_url: str, ids: Sequence[str], targets: Sequence[str],
                  headers: Mapping[str, str]) -> Operation:
    """Operation ``n`` moves record ``ids[n % len(ids)]`` to one of two stages in turn (every PATCH a
    real change; a record is never moved by two at once while there are more ids than connections)."""

    async def change(session: aiohttp.ClientSession, n: int) -> None:
        body = {"stage_id": targets[(n // len(ids)) % 2]}
        async with session.patch(f"{records_url}/{ids[n % len(ids)]}", json=body, headers=headers) as response:
            data = await response.read()
            if response.status != 200:
                raise Unexpected(f"status {response.status}", data)

    return change


@dataclass
class LoadResult:
    """Latencies (seconds) of the operations that succeeded in the measured window."""

    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # the first failure of each kind, in full
    seconds: float = 0.0
    concurrency: int = 1

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Successful operations per second over the measured window."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def summary(self) -> dict[str, Any]:
        return {"operations": self.ok, "seconds": round(self.seconds, 3), "concurrency": self.concurrency,
                "throughput_per_s": round(self.throughput, 2), "p50_ms": round(self.p(50) * 1000, 3),
                "p99_ms": round(self.p(99) * 1000, 3), "failures": dict(self.failures)}


class LoadError(RuntimeError):
    """Too many operations failed for the figures to mean anything."""


async def _drive(operation: Operation, concurrency: int, seconds: float, warmup: float,
                 max_operations: int | None, timeout: float, rate: float | None,
                 keep_cookies: bool = False) -> LoadResult:
    result = LoadResult(concurrency=concurrency)
    sequence = itertools.count()
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        # Past the deadline only while nothing was measured yet: operations slower than the whole
        # window (a tiny scale on a busy machine) still give one measured answer each, not none.
        while ((time.perf_counter() < stop_at or not (result.latencies or result.failures))
               and (max_operations is None or result.ok < max_operations)):
            n = next(sequence)
            if rate:  # paced: operation n starts at n / rate seconds, or as soon as a task is free
                due = started + n / rate
                if due >= stop_at:  # not due in the window: quit now (sleeping first would stretch the window)
                    return
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if time.perf_counter() >= stop_at:
                    return
            began = time.perf_counter()
            try:
                await operation(session, n)
                failure = None
            except Unexpected as exc:
                failure = exc.what
                result.examples.setdefault(failure, str(exc))
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = type(exc).__name__
                result.examples.setdefault(failure, str(exc))
            if began < measure_from:
                continue
            if failure is None:
                result.latencies.append(time.perf_counter() - began)
            else:
                result.failures[failure] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    # Cookies kept like a browser's or requests.Session's (the gateway's crm_ct consistency token on
    # 127.0.0.1, which aiohttp's default jar refuses for an IP host), or none at all.
    jar = aiohttp.CookieJar(unsafe=True) if keep_cookies else aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                     cookie_jar=jar) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    # The window closes when the last operation in flight at the deadline has finished.
    result.seconds = time.perf_counter() - measure_from
    return result


def run_load(operation: Operation, *, concurrency: int, seconds: float, warmup: float = 0.0,
             max_operations: int | None = None, timeout: float = 30.0, rate: float | None = None,
             max_failure_ratio: float = 0.01, keep_cookies: bool = False) -> LoadResult:
    """Run ``operation`` from ``concurrency`` tasks for ``seconds`` after ``warmup`` seconds.

    With ``max_operations`` the run ends as soon as that many operations succeeded (or the
    time is up); with ``rate`` the operations start at that many per second at most (an open
    loop, as long as the tasks keep up); ``keep_cookies`` makes the tasks share one cookie jar,
    as a browser's tabs do (the gateway's consistency token comes back on every request).
    Raises ``LoadError`` when nothing succeeded or more than ``max_failure_ratio`` of the
    measured operations failed, saying why: a broken target must never be reported as a fast one.
    """
    result = run_coroutine(_drive(operation, concurrency, seconds, warmup, max_operations, timeout, rate,
                                keep_cookies))
    failed = sum(result.failures.values())
    if not result.ok or failed > max_failure_ratio * (failed + result.ok):
        raise LoadError(f"{failed} of {failed + result.ok} operations failed: {dict(result.failures)}; "
                        f"first of each: {result.examples}")
    return result


def json_request(method: str, url: str, *, headers: dict[str, str] | None = None,
                 body: Callable[[int], Any] | None = None, expect: int = 200) -> Operation:
    """An operation that sends one JSON request and succeeds on status ``expect``."""

    async def operation(session: aiohttp.ClientSession, n: int) -> None:
        payload = body(n) if body is not None else None
        async with session.request(method, url, json=payload, headers=headers) as response:
            data = await response.read()
            if response.status != expect:
                raise Unexpected(f"status {response.status}", data)

    return operation

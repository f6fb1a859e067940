"""The bench's load generator measures what it drives, even when one operation outlasts the window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crm_devstack.bench.load import LoadError, Unexpected, run_load


def test_operations_slower_than_the_window_are_still_measured() -> None:
    async def slow(session: Any, n: int) -> None:
        await asyncio.sleep(0.3)

    result = run_load(slow, concurrency=2, seconds=0.1, warmup=0.05)
    assert result.ok >= 1 and all(latency >= 0.3 for latency in result.latencies)


def test_a_failing_target_is_never_reported_as_a_fast_one() -> None:
    async def broken(session: Any, n: int) -> None:
        raise Unexpected("status 500")

    with pytest.raises(LoadError, match="status 500"):
        run_load(broken, concurrency=2, seconds=0.1)


def test_a_paced_run_never_waits_for_operations_due_after_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 a second for 0.2 s with 20 tasks: only operation 0 is due. The other tasks, each holding a
    # later operation's number, must quit at once, not sleep until it would be due (up to 19 s):
    # the window would last that long and every rate over it would be too low.
    waits: list[float] = []
    sleep = asyncio.sleep

    async def noted(delay: float, *args: Any) -> Any:
        waits.append(delay)
        return await sleep(delay, *args)

    async def op(session: Any, n: int) -> None:
        ran.append(n)

    ran: list[int] = []
    monkeypatch.setattr(asyncio, "sleep", noted)
    result = run_load(op, concurrency=20, seconds=0.2, rate=1.0)
    assert ran == [0] and result.ok == 1
    assert max(waits, default=0.0) <= 0.2

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

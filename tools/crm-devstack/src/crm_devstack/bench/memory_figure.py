"""Figure 10: the memory of the local platform (``make run``), idle and under the create load.

The platform is started exactly as ``make run`` starts it (``python -m crm_devstack start``: the
embedded Kafka, SQLite, every api and worker, the gateway and the console), in a temporary folder
on free ports, so it never meets a developer's own ``make run``. Measured (``crm_devstack.memory``):
PSS and RSS summed over every process it started, the supervisor included, per group and in total,

- idle: once the platform has answered a create and stood still for ``idle_seconds``;
- under load: the peak while ``concurrency`` connections create leads through the gateway.

The goal (issue 19) is at most 1 GB of PSS idle. Run alone:
``python -m crm_devstack.bench.memory_figure [--seconds 10] [--env NAME=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from crm_devstack.bench.load import LoadResult, json_request, run_load
from crm_devstack.bench.report import FIGURES, Goal, Row
from crm_devstack.embedded import RunningStack, embedded_stack
from crm_devstack.errors import DevstackError
from crm_devstack.memory import MB, Snapshot, measure, peak, sample_while
from crm_devstack.stack import make_token
from crm_devstack.supervisor import wait_http_ok

FIGURE = "memory"
FIGURES.setdefault(FIGURE, "10. memory of the local platform (make run)")
GOAL_MB = 1024.0
GOAL = "goal: 1 GB (issue 19)"


def _first_create(stack: RunningStack, headers: dict[str, str], timeout: float = 120) -> None:
    """Wait until a lead can be created (the leads service knows the catalogue's default stage)."""
    deadline = time.monotonic() + timeout
    url = f"{stack.config.gateway_url}/v1/leads"
    last = ""
    while time.monotonic() < deadline:
        response = requests.post(url, json={"title": "memory probe"}, headers=headers, timeout=30)
        if response.status_code == 201:
            return
        last = f"{response.status_code} {response.text[:300]}"
        time.sleep(0.5)
    raise DevstackError(f"no lead could be created within {timeout:g} s: {last}")


def measure_stack(stack: RunningStack, *, idle_seconds: float, load_seconds: float, concurrency: int,
                  log: Callable[[str], None] = print) -> tuple[Snapshot, Snapshot, LoadResult]:
    """(idle, peak under the create load, the load's result) of a running stack."""
    token = make_token(stack.config.jwt_secret, user="memory-user", office="memory-office", roles=("marketing",))
    headers = {"Authorization": f"Bearer {token}"}
    wait_http_ok(f"{stack.config.gateway_url}/readyz", timeout=60)
    _first_create(stack, headers)
    log(f"  idle: {idle_seconds:g} s without requests")
    time.sleep(idle_seconds)
    idle = measure(stack.roots())
    log(f"    PSS {idle.pss / MB:,.0f} MB, RSS {idle.rss / MB:,.0f} MB in {idle.count} processes")
    create = json_request("POST", f"{stack.config.gateway_url}/v1/leads", headers=headers, expect=201,
                          body=lambda n: {"title": f"Memory lead {n}", "description": "created by the memory figure"})
    log(f"  create load: {concurrency} connection(s), {load_seconds:g} s")
    result, snapshots = sample_while(stack.roots, lambda: run_load(create, concurrency=concurrency,
                                                                   seconds=load_seconds, warmup=1.0))
    loaded = peak(snapshots)
    log(f"    {result.throughput:,.1f} creates/s; peak PSS {loaded.pss / MB:,.0f} MB, "
        f"RSS {loaded.rss / MB:,.0f} MB")
    return idle, loaded, result


def figure_memory(load_seconds: float, concurrency: int, log: Callable[[str], None], details: dict[str, Any], *,
                  idle_seconds: float = 20.0, env: Mapping[str, str] | None = None) -> list[Row]:
    """Start the local platform as ``make run`` does, measure it idle and under the create load, stop it;
    the rows compare each total with the 1 GB goal, ``details["memory"]`` keeps every group."""
    log("figure 10: memory of the local platform (make run), idle and under the create load")
    with embedded_stack(env, log=log) as stack:
        idle, loaded, result = measure_stack(stack, idle_seconds=idle_seconds, load_seconds=load_seconds,
                                             concurrency=concurrency, log=log)
    details["memory"] = {"idle": idle.as_dict(), "create_load_peak": loaded.as_dict(),
                         "create_load": result.summary(), "env": dict(env or {})}
    note = f"{idle.count} processes; PSS: shared pages split among the processes that map them"
    return [
        Row(FIGURE, "PSS idle", "MB", idle.pss / MB, GOAL, GOAL_MB, note,
            goal=Goal(at_most=True, source="issue 19")),
        Row(FIGURE, "RSS idle", "MB", idle.rss / MB, GOAL, GOAL_MB, "RSS: shared pages counted in every process"),
        Row(FIGURE, "PSS under create load (peak)", "MB", loaded.pss / MB, GOAL, GOAL_MB,
            f"{concurrency} connections, {result.throughput:,.0f} creates/s"),
        Row(FIGURE, "RSS under create load (peak)", "MB", loaded.rss / MB, GOAL, GOAL_MB),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_devstack.bench.memory_figure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the create load (default 10)")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="quiet time before the idle measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the create load (default 16)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the platform (repeatable), for before/after experiments")
    parser.add_argument("--json", type=Path, default=None, help="also write the details to this JSON file")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    details: dict[str, Any] = {}
    try:
        rows = figure_memory(args.seconds, args.concurrency, print, details, idle_seconds=args.idle_seconds,
                             env=env)
    except DevstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for row in rows:
        print(f"{row.metric:<32} {row.value:>8,.0f} MB  ({row.baseline}) {row.note}")
    for when in ("idle", "create_load_peak"):
        print(f"\n{when}:")
        for name, group in details["memory"][when]["groups"].items():
            print(f"  {name:<24} {group['processes']:>3}  PSS {group['pss_mb']:>7.1f} MB  "
                  f"RSS {group['rss_mb']:>7.1f} MB")
    if args.json:
        args.json.write_text(json.dumps(details, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

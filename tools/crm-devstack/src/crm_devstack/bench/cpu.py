"""Where the time goes: the CPU each part of the platform uses, from ``/proc``.

One implementation for the profile mode (``python -m crm_devstack.bench.profile``) and for
``make bench``'s figure 11, the CPU per create and per stage change by part:

- a *part* is a process the platform started with everything under it (a gunicorn master and
  its workers, a service's worker, PostgreSQL and its backends, the Kafka broker, a baseline app);
- its CPU is user + system time of those processes and of the children they reaped (a
  PostgreSQL backend that ends between two looks still counts);
- figure 11 looks before and after a timed phase of operations and the drain of the events they
  caused (every consumer caught up, the outboxes empty), takes off what each part uses when the
  platform is idle (measured just before, in the same run), and divides by the operations: the
  CPU one more create costs, everywhere it goes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crm_devstack.bench.load import LoadResult, Operation, run_load, stage_changes
from crm_devstack.bench.report import Breakdown, Row
from crm_devstack.errors import DevstackError
from crm_devstack.platform import Platform
from crm_devstack.postgres import PostgresCluster

if TYPE_CHECKING:
    from crm_devstack.bench.figures import Bench

FIGURE = "cpu"
BASELINE = "bare Flask+SQLAlchemy insert (app + PostgreSQL)"
LOAD_GENERATOR = "load generator (bench)"
_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(roots: Iterable[int]) -> set[int]:
    """``roots`` and every process under them, now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def cpu_seconds(pids: Iterable[int], *, reaped: bool = True) -> float:
    """utime + stime of live processes (their threads included) and, with ``reaped``, of the
    children they have waited for (cutime + cstime), so a process ending between two looks
    moves its time to its parent instead of taking it away."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            if reaped:
                ticks += int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / _TICKS


def part_name(process: str) -> str:
    """A platform process's part: ``gateway-api`` -> ``gateway``, ``leads-worker`` -> ``leads worker``."""
    service, _, role = process.rpartition("-")
    if role == "api" and service in ("gateway", "console"):
        return service
    return f"{service} {role}" if service else process


def platform_parts(platform: Platform, postgres: PostgresCluster, kafka_pid: int | None) -> dict[str, list[int]]:
    """Root pids of each part of the platform: every process it started (the gateway, each
    service's api and worker, the console), PostgreSQL and, when known, the Kafka broker."""
    parts: dict[str, list[int]] = {}
    for name, pid in platform.processes.pids().items():
        parts.setdefault(part_name(name), []).append(pid)
    if postgres.pid:
        parts["postgresql"] = [postgres.pid]
    if kafka_pid:
        parts["kafka"] = [kafka_pid]
    return parts


class CpuMeter:
    """CPU seconds used so far by each part (and by this process, the load generator)."""

    def __init__(self, parts: Mapping[str, Sequence[int]]) -> None:
        self.parts = {name: list(roots) for name, roots in parts.items()}

    def snapshot(self) -> dict[str, float]:
        cpu = {name: cpu_seconds(descendants(roots)) for name, roots in self.parts.items()}
        cpu[LOAD_GENERATOR] = cpu_seconds([os.getpid()], reaped=False)  # its children are the platform
        return cpu

    @staticmethod
    def used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {name: after[name] - before.get(name, 0.0) for name in after}


# -- figure 11 -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """A timed phase: how many operations, over how long (load and drain), and the CPU each
    part used, as measured and net of its idle use over the same time."""

    operations: int
    seconds: float
    load: LoadResult
    used: dict[str, float]
    net: dict[str, float]

    def per_operation_ms(self, parts: Iterable[str]) -> dict[str, float]:
        return {part: 1000 * self.net[part] / self.operations for part in parts}

    def summary(self) -> dict[str, Any]:
        return {"operations": self.operations, "seconds_with_drain": round(self.seconds, 2),
                "load": self.load.summary(),
                "cpu_seconds": {k: round(v, 3) for k, v in self.used.items()},
                "cpu_seconds_net_of_idle": {k: round(v, 3) for k, v in self.net.items()},
                "ms_per_operation": {k: round(1000 * v / self.operations, 3) for k, v in self.net.items()}}


def _phase(bench: Bench, meter: CpuMeter, idle: Mapping[str, float], what: str, operation: Operation, *,
           drain: bool) -> Phase:
    """``operation`` for the plan's load time at its concurrency; with ``drain``, until every
    consumer has caught up with what it caused too."""
    plan = bench.plan
    bench.say(f"  {what}: {plan.concurrency} connections, {plan.load_seconds:g} s"
              + (", then until the workers have caught up" if drain else ""))
    before = meter.snapshot()
    began = time.monotonic()
    load = run_load(operation, concurrency=plan.concurrency, seconds=plan.load_seconds)
    if drain:
        bench.settle(f"figure 11's {what}")
    seconds = time.monotonic() - began
    used = CpuMeter.used(before, meter.snapshot())
    net = {part: cpu - idle.get(part, 0.0) * seconds for part, cpu in used.items()}
    operations = load.ok + sum(load.failures.values())  # a failed one cost CPU too (at most 1 %)
    served = sum(cpu for part, cpu in net.items() if part != LOAD_GENERATOR)
    bench.say(f"    {operations:,} in {load.seconds:.1f} s ({load.throughput:,.1f}/s), {seconds:.1f} s with the "
              f"drain; {1000 * served / operations:.1f} ms CPU each, every part but the load generator, net of idle")
    return Phase(operations, seconds, load, used, net)


def figure(bench: Bench) -> list[Row]:
    """Figure 11: the CPU of a create and of a stage change, by part, against the bare insert's."""
    plan = bench.plan
    bench.say("figure 11: CPU per create and per stage change, by part of the platform, vs the bare insert's")
    if not bench.baseline_pids.get("insert"):
        raise DevstackError("figure 11 needs the bare insert app's pid (Bench.baseline_pids['insert'])")
    platform = platform_parts(bench.platform, bench.postgres, bench.kafka_pid)
    meter = CpuMeter({**platform, "bare insert app": [bench.baseline_pids["insert"]]})
    bench.settle("figure 11's start")
    idle_seconds = max(2.0, 5.0 * plan.time_factor)
    bench.say(f"  idle: {idle_seconds:g} s without requests")
    before = meter.snapshot()
    time.sleep(idle_seconds)
    idle = {part: cpu / idle_seconds for part, cpu in CpuMeter.used(before, meter.snapshot()).items()}

    headers = {"Content-Type": "application/json"}
    insert_op = bench.create_operation(bench.baseline_urls["insert"], headers, False)
    run_load(insert_op, concurrency=plan.concurrency, seconds=plan.warmup_seconds)
    insert = _phase(bench, meter, idle, "bare inserts", insert_op, drain=False)
    first = len(bench.created_ids)
    creates = _phase(bench, meter, idle, "creates",
                     bench.create_operation(f"{bench.gateway}/v1/leads", bench.writer, True), drain=True)
    changes = _phase(bench, meter, idle, "stage changes", _stage_change(bench, bench.created_ids[first:]),
                     drain=True)

    parts = [p for p in platform if p != "bare insert app"]
    per_create = creates.per_operation_ms(parts)
    per_change = changes.per_operation_ms(parts)
    base = 1000 * (insert.net["bare insert app"] + insert.net.get("postgresql", 0.0)) / insert.operations
    idle_cores = sum(idle[p] for p in parts)
    order = sorted(parts, key=lambda p: -(per_create[p] + per_change[p]))
    bench.details["cpu"] = {
        "idle_seconds": idle_seconds, "idle_cores": {k: round(v, 4) for k, v in idle.items()},
        "bare_insert": insert.summary(), "create": creates.summary(), "stage_change": changes.summary(),
        "baseline_ms_per_insert": round(base, 3),
        "by_part_ms": {p: {"create": round(per_create[p], 3), "stage_change": round(per_change[p], 3)}
                       for p in order}}
    total_create, total_change = sum(per_create.values()), sum(per_change.values())
    bench.say(f"    {total_create:.1f} ms CPU per create, {total_change:.1f} ms per stage change, the bare insert "
              f"{base:.2f} ms; idle {idle_cores:.2f} cores")
    top = ", ".join(f"{p} {per_create[p]:.1f}" for p in sorted(parts, key=lambda p: -per_create[p])[:4])
    return [
        Row(FIGURE, "per create", "ms", total_create, BASELINE, base,
            f"CPU of every part of the platform (gateway, apis, workers, Kafka, PostgreSQL) over "
            f"{creates.operations:,} creates ({plan.concurrency} connections, {plan.load_seconds:g} s) and the "
            f"drain of their events, less each part's idle use ({idle_cores:.2f} cores in all); most: {top} ms; "
            "the breakdown is printed below the table"),
        Row(FIGURE, "per stage change", "ms", total_change, BASELINE, base,
            f"PATCH stage_id on the leads just created, {changes.operations:,} changes, then the drain; no "
            "trigger fires on them"),
    ]


def breakdown(details: Mapping[str, Any]) -> Breakdown | None:
    """Figure 11's breakdown for the report, from the run's details (None when it was not measured)."""
    cpu = details.get("cpu")
    if not isinstance(cpu, Mapping):
        return None
    return Breakdown("11. CPU per operation by part (ms, net of idle), against the bare insert (app + PostgreSQL)",
                     "ms", ("create", "stage change"),
                     {part: (ms["create"], ms["stage_change"]) for part, ms in cpu["by_part_ms"].items()},
                     "bare insert", cpu["baseline_ms_per_insert"])


def _stage_change(bench: Bench, leads: list[str]) -> Operation:
    """Each lead created in the phase before moves NEW -> CONTACTED, then back, and so on: every
    PATCH is a real change (a lead is never moved by two PATCHes at once: there are more
    leads than connections)."""
    targets = [bench.stages["CONTACTED"]["id"], bench.stages["NEW"]["id"]]
    if len(leads) < 2 * bench.plan.concurrency:
        raise DevstackError(f"figure 11 needs at least {2 * bench.plan.concurrency} leads, it created {len(leads)}")

    return stage_changes(f"{bench.gateway}/v1/leads", leads, targets, bench.writer)



"""The bench's report shows each goal next to its figure with met or missed, its CPU figure
counts what processes really used, and the catch-up's drain rate follows the largest backlog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from crm_devstack.bench.cpu import CpuMeter, cpu_seconds, descendants, part_name
from crm_devstack.bench.figures import _largest_drain
from crm_devstack.bench.kafka_probes import BacklogState
from crm_devstack.bench.report import Breakdown, Goal, Row, format_breakdown, format_table, write_chart, write_json

AT_MOST_4X = Goal(at_most=True, factor=4.0)
AT_LEAST_QUARTER = Goal(at_most=False, factor=0.25)
RAW_PLUS_50 = Goal(at_most=True, plus=50.0)


@pytest.mark.parametrize(("goal", "value", "baseline", "met", "text"), [
    (AT_MOST_4X, 40.0, 10.0, True, "<= 4x"),
    (AT_MOST_4X, 41.0, 10.0, False, "<= 4x"),
    (AT_LEAST_QUARTER, 300.0, 1000.0, True, ">= 0.25x"),
    (AT_LEAST_QUARTER, 249.0, 1000.0, False, ">= 0.25x"),
    (RAW_PLUS_50, 59.0, 10.0, True, "<= baseline + 50.0 ms"),
    (RAW_PLUS_50, 61.0, 10.0, False, "<= baseline + 50.0 ms"),
    (Goal(at_most=True, factor=1.2, plus=180.0), 300.0, 100.0, True, "<= 1.2x + 180 ms"),
])
def test_a_goal_is_met_or_missed_against_the_same_runs_baseline(goal, value, baseline, met, text) -> None:
    row = Row("trigger", "p99", "ms", value, "raw Kafka produce->consume", baseline, goal=goal)
    assert row.goal_met is met
    assert goal.text("ms") == text


def test_the_table_and_the_json_show_each_goal_next_to_its_figure(tmp_path) -> None:
    rows = [Row("create", "throughput", "req/s", 100.0, "bare Flask+SQLAlchemy insert", 1000.0, "", AT_LEAST_QUARTER),
            Row("create", "p50", "ms", 30.0, "bare Flask+SQLAlchemy insert", 10.0, goal=AT_MOST_4X),
            Row("create", "p99", "ms", 90.0, "bare Flask+SQLAlchemy insert", 20.0)]
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[-1] == "goal"
    assert lines[2].split()[-4:] == ["0.1x", ">=", "0.25x", "MISSED"]
    assert lines[3].split()[-4:] == ["3x", "<=", "4x", "met"]
    assert lines[4].split()[-1] == "4.5x"  # no goal: nothing after the ratio
    assert "goals: 1 of 2 met; missed: 1. create-lead via gateway throughput" in table

    write_json(tmp_path / "bench.json", rows, {})
    written = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["goal"] and (r["goal"]["text"], r["goal"]["limit"], r["goal"]["met"]) for r in written] == [
        (">= 0.25x", 250.0, False), ("<= 4x", 40.0, True), None]


def test_the_cpu_breakdown_is_printed_and_drawn(tmp_path) -> None:
    breakdown = Breakdown("11. CPU per operation", "ms", ("create", "stage change"),
                          {"leads api": (10.0, 6.0), "kafka": (12.5, 8.0)}, "bare insert", 3.5)
    assert breakdown.totals == (22.5, 14.0)
    text = format_breakdown(breakdown)
    lines = text.splitlines()
    assert lines[2].split() == ["part", "create", "(ms)", "stage", "change", "(ms)"]
    assert lines[4].split() == ["leads", "api", "10.0", "6.00"]
    assert lines[-2].split() == ["total", "22.5", "14.0"]
    assert lines[-1].split() == ["bare", "insert", "3.50", "3.50"]
    rows = [Row("cpu", "per create", "ms", 22.5, "bare insert", 3.5)]
    write_chart(tmp_path / "bench.png", rows, "test", breakdown)
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_parts_cpu_counts_its_children_also_after_they_ended() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\n"
                               f"subprocess.run([sys.executable, '-c', {burn!r}])\ntime.sleep(30)"])
    try:
        meter = CpuMeter({"parent": [parent.pid]})
        before = meter.snapshot()
        deadline = time.monotonic() + 30
        while len(descendants([parent.pid])) == 1 and time.monotonic() < deadline:  # the child has started
            time.sleep(0.01)
        while len(descendants([parent.pid])) > 1 and time.monotonic() < deadline:  # and ended, reaped
            time.sleep(0.05)
        used = CpuMeter.used(before, meter.snapshot())
        assert 0.25 <= used["parent"] < 5, used  # the child's 0.3 s, now in its parent's reaped time
        assert used["load generator (bench)"] >= 0
    finally:
        parent.kill()
        parent.wait()
    assert cpu_seconds([os.getpid()], reaped=False) > 0


@pytest.mark.parametrize(("process", "part"), [("gateway-api", "gateway"), ("console-api", "console"),
                                              ("leads-api", "leads api"), ("linking-worker", "linking worker")])
def test_platform_processes_are_named_as_parts(process, part) -> None:
    assert part_name(process) == part


def _state(positions: dict[str, int], lag: dict[str, int]) -> BacklogState:
    return BacklogState(lag=sum(lag.values()), outbox=0, groups_ready=True, ends=0, group_lag=lag,
                        positions=positions)


def test_the_drain_rate_is_the_busiest_groups_events_from_its_first_move_to_its_last() -> None:
    at_rest = {"linking.records": 100, "triggers.events": 50}
    history = [
        (11.0, _state({"linking.records": 100, "triggers.events": 50}, {})),  # workers starting
        (12.0, _state({"linking.records": 100, "triggers.events": 60}, {"linking.records": 300})),
        (13.0, _state({"linking.records": 250, "triggers.events": 150}, {"linking.records": 150})),
        (14.0, _state({"linking.records": 400, "triggers.events": 150}, {"linking.records": 0})),
        (15.0, _state({"linking.records": 400, "triggers.events": 150}, {"linking.records": 0})),
    ]
    found = _largest_drain(10.0, at_rest, history)
    assert (found["group"], found["events"], found["seconds"], found["drained_per_s"]) == (
        "linking.records", 300, 2.0, 150.0)
    assert found["started_moving_after_s"] == 2.0

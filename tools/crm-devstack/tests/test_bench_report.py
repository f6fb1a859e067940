"""The bench's report shows each goal next to its figure with met or missed, its CPU figure
counts what processes really used, the catch-up's drain rate follows the largest backlog, and the
webhook figures count what their receiver got against the creates of the same window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from crm_devstack.bench.cpu import CpuMeter, cpu_seconds, descendants, part_name
from crm_devstack.bench.figures import _largest_drain
from crm_devstack.bench.kafka_probes import BacklogState
from crm_devstack.bench.load import LoadResult
from crm_devstack.bench.report import Breakdown, Goal, Row, format_breakdown, format_table, write_chart, write_json
from crm_devstack.bench.webhook_load import Arrival, Phase, Receiver, keeping_up
from crm_devstack.bench.webhook_load import _rows as _webhook_rows

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


def test_keeping_up_counts_the_windows_deliveries_the_drain_and_the_backlog() -> None:
    # 10 commits over a 2 s window starting at 100.0; each delivered 0.35 s after its commit.
    commits = [100.0 + 0.2 * k for k in range(10)]
    arrivals = [c + 0.35 for c in commits]
    found = keeping_up(commits, arrivals, start=100.0, seconds=2.0, step=0.5)
    assert found["delivered_in_window"] == 9  # the last, committed at 101.8, arrives at 102.15
    assert found["per_s"] == pytest.approx(4.5)
    assert found["drain_s"] == pytest.approx(0.15)
    assert found["backlog_at_window_end"] == 1
    # Looked at 100.0, 100.5, ... 102.0 and at the last arrival: 1 waiting at first, 2 at most, 0 at the end.
    assert [t for t, _ in found["backlog_series_s_events"]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.15]
    assert [n for _, n in found["backlog_series_s_events"]] == [1, 2, 2, 2, 1, 0]
    assert found["max_backlog"] == 2

    # Everything within the window: no drain.
    assert keeping_up([100.0], [100.5], start=100.0, seconds=2.0)["drain_s"] == 0.0


def _phase(share: float, latencies_ms: list[float], retried: int = 0) -> Phase:
    load = LoadResult(latencies=[0.05] * len(latencies_ms), seconds=2.0)
    started = 1000.0
    commits, queued, arrivals, answered = {}, {}, {}, {}
    for k, ms in enumerate(latencies_ms):
        committed = started + 0.2 * k
        event = f"e{k}"
        commits[event] = (committed, committed + 0.01)
        queued[event] = (committed + 0.04, committed + ms / 1000, 2 if k < retried else 1)
        arrivals[f"lead{k}"] = Arrival(event, committed + ms / 1000, "lead.created", "")
        answered[f"lead{k}"] = committed + 0.005
    return Phase("half figure 1's rate" if share < 1 else "figure 1's rate", share, 5.0, load, started, answered,
                 arrivals, commits, queued)


def test_the_webhook_figures_rows_carry_their_goals_at_half_the_rate_only() -> None:
    half, full = _phase(0.5, [60.0] * 9 + [90.0], retried=1), _phase(1.0, [200.0] * 10)
    details = {"half_rate": half.details(), "full_rate": full.details()}
    assert details["half_rate"]["deliveries_retried"] == 1
    parts = details["half_rate"]["where_the_time_goes_ms"]
    assert parts["commit_to_queued_in_webhooks"]["p50_ms"] == pytest.approx(40.0)
    assert parts["queued_to_received"]["p50_ms"] == pytest.approx(20.0)
    assert parts["commit_to_relay_ack"]["p50_ms"] == pytest.approx(10.0)
    baseline = [0.005] * 99 + [0.030]  # raw Kafka round trips: p99 ~ 29.75 ms
    rows = _webhook_rows([half, full], details, 10.0, baseline)
    by_metric = {(r.figure, r.metric): r for r in rows}
    assert list(by_metric) == [
        ("webhook", "p50 at half figure 1's rate"), ("webhook", "p99 at half figure 1's rate"),
        ("webhook", "p50 at figure 1's rate"), ("webhook", "p99 at figure 1's rate"),
        ("webhook_rate", "deliveries/s at half figure 1's rate"), ("webhook_rate", "drain at half figure 1's rate"),
        ("webhook_rate", "deliveries/s at figure 1's rate"), ("webhook_rate", "drain at figure 1's rate")]
    p99 = by_metric[("webhook", "p99 at half figure 1's rate")]
    assert p99.value == pytest.approx(87.3) and p99.goal is not None and p99.goal.text("ms") == "<= baseline + 50.0 ms"
    assert p99.goal_met is False  # 87.3 > 29.75 + 50
    assert by_metric[("webhook", "p99 at figure 1's rate")].goal is None
    rate = by_metric[("webhook_rate", "deliveries/s at half figure 1's rate")]
    # 10 commits 0.2 s apart from 1000.0, each received 60-90 ms later: all within the 2 s window.
    assert (rate.value, rate.baseline_value, rate.goal_met) == (5.0, 5.0, True)
    drain = by_metric[("webhook_rate", "drain at half figure 1's rate")]
    assert (drain.value, drain.baseline_value, drain.goal_met) == (0.0, 30.0, True)
    assert by_metric[("webhook_rate", "drain at figure 1's rate")].goal is None

    table = format_table(rows)
    assert "12. commit -> webhook received" in table and "13. webhook deliveries/s" in table
    assert "goals: 2 of 3 met; missed: 12. commit -> webhook received p99 at half figure 1's rate" in table


def test_the_receiver_answers_204_and_keeps_each_events_first_arrival() -> None:
    receiver = Receiver()
    try:
        body = json.dumps({"type": "lead.created", "timestamp": "2026-12-07T10:00:00.000Z",
                           "data": {"id": "lead-1"}}).encode()
        with requests.Session() as session:  # one kept-alive connection, as the dispatcher's pool
            for _ in range(2):  # the second a retry: the same webhook-id
                r = session.post(receiver.url, data=body, headers={"webhook-id": "evt-1"}, timeout=10)
                assert r.status_code == 204
        assert receiver.wait_for(["lead-1"], timeout=10) == 0
        assert receiver.wait_for(["lead-1", "lead-2"], timeout=0.1) == 1
        got = receiver.of(["lead-1", "lead-2"])
        assert list(got) == ["lead-1"]
        assert (got["lead-1"].event_id, got["lead-1"].event_type) == ("evt-1", "lead.created")
        assert (receiver.requests, receiver.duplicates) == (2, 1)
    finally:
        receiver.stop()

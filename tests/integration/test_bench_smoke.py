"""``make bench``'s machinery at a tiny scale, on the test session's platform (real PostgreSQL
and Kafka): every figure is measured with its baseline from the same run, the report holds
them all with their ratios and, where a figure has a goal, the goal with met or missed, the
CPU figure's breakdown by part is printed, and the JSON and the PNG chart are written. The webhook
figures subscribe a receiver of their own through the gateway and remove it again.

No timing is asserted: the machine is shared. The bench checks its own results as it goes
(the SQL baseline returns the API's page, every trigger action of the catch-up was applied,
almost no operation failed) and raises when they do not hold, which fails this test.
"""

from __future__ import annotations

import json

import pytest

from crm_devstack.bench import FIGURES, BenchPlan, cpu, run_bench, webhook_load
from crm_devstack.bench.figures import RYW_BASELINE
from crm_devstack.bench.runner import Target

pytestmark = pytest.mark.e2e

# The platform fixture's gunicorns run one worker each: the baseline apps must match.
TINY = BenchPlan(scale=0.001, concurrency=4, web_concurrency=1, web_threads=4)


@pytest.mark.timeout(1200)  # every figure, each with its settling: 5 to 8 minutes here
def test_bench_reports_every_figure_against_its_baseline(platform, postgres, kafka, tmp_path):
    report = run_bench(TINY, tmp_path, target=Target(platform, postgres, kafka.bootstrap, "e2e", kafka))

    data = json.loads(report.json_path.read_text())
    rows = data["rows"]
    assert {row["figure"] for row in rows} == set(FIGURES)
    for row in rows:
        # A drain is 0 when every webhook arrived within its load's window.
        assert (row["value"] >= 0 if row["metric"].startswith("drain at") else row["value"] > 0), row
        assert row["baseline_value"] > 0 and row["baseline"], row
        assert row["ratio"] == pytest.approx(row["value"] / row["baseline_value"], rel=1e-3), row

    def metrics(figure: str) -> set[tuple[str, str]]:
        return {(row["metric"], row["baseline"]) for row in rows if row["figure"] == figure}

    assert metrics("create") == {(m, b) for m in ("throughput", "p50", "p99")
                                 for b in ("bare Flask JSON", "bare Flask+SQLAlchemy insert")} | {
        (f"{m}, token kept", "bare Flask+SQLAlchemy insert") for m in ("throughput", "p50", "p99")}
    raw = "raw Kafka produce->consume"
    assert metrics("outbox") == {("p50", raw), ("p99", raw)}
    assert metrics("trigger") == {(q, raw) for q in ("p50", "p99")} | {
        (f"{q} at {rate}", raw) for q in ("p50", "p99") for rate in ("half figure 1's rate", "figure 1's rate")}
    rates = ("half figure 1's rate", "figure 1's rate")
    assert metrics("webhook") == {(f"{q} at {rate}", raw) for q in ("p50", "p99") for rate in rates}
    assert metrics("webhook_rate") == {(f"deliveries/s at {rate}", webhook_load.RATE_BASELINE) for rate in rates} | {
        (f"drain at {rate}", webhook_load.DRAIN_BASELINE) for rate in rates}
    small, large = TINY.list_sizes
    assert {m for m, _ in metrics("list")} == {"p50 @ 100", "p99 @ 100", "p50 @ 1k", "p99 @ 1k"}
    assert (small, large) == (100, 1000)
    assert {m for m, _ in metrics("bulk")} == {"create records/s", "stage change records/s"}
    assert {m for m, _ in metrics("catchup")} == {"drain time", "largest backlog drained/s"}
    assert metrics("cpu") == {("per create", cpu.BASELINE), ("per stage change", cpu.BASELINE)}
    assert metrics("import") == {("run (start -> done)", "bulk API calls from a script"),
                                 ("upload + check + run", "bulk API calls from a script")}
    assert metrics("ryw") == {(f"{q} {variant}", RYW_BASELINE)
                              for q in ("p50", "p99") for variant in ("cross-service", "same-service")}
    # Issue 19's goals (and the earlier issues') stand next to their figures, met or not.
    goals = {(row["figure"], row["metric"]): row["goal"] for row in rows if row["goal"]}
    assert set(goals) >= {("create", "throughput"), ("create", "p50"), ("trigger", "p99 at half figure 1's rate"),
                          ("list", "p50 @ 100"), ("list", "p50 @ 1k"), ("catchup", "drain time"),
                          ("bulk", "create records/s"), ("board", "p50"), ("import", "run (start -> done)"),
                          ("webhook", "p99 at half figure 1's rate"),
                          ("webhook_rate", "deliveries/s at half figure 1's rate"),
                          ("webhook_rate", "drain at half figure 1's rate")}
    assert goals[("trigger", "p99 at half figure 1's rate")]["text"] == "<= baseline + 50.0 ms"
    assert goals[("webhook", "p99 at half figure 1's rate")]["text"] == "<= baseline + 50.0 ms"
    assert goals[("webhook_rate", "deliveries/s at half figure 1's rate")]["text"] == ">= 0.95x"
    for (figure, metric), goal in goals.items():
        row = next(r for r in rows if (r["figure"], r["metric"]) == (figure, metric))
        if goal["text"].startswith(">="):
            assert goal["met"] == (row["value"] >= goal["limit"])
        else:
            assert goal["met"] == (row["value"] <= goal["limit"])
    assert "goals: " in report.table and " of " in report.table

    details = data["details"]
    by_part = details["cpu"]["by_part_ms"]
    assert {"gateway", "leads api", "leads worker", "triggers worker", "postgresql", "kafka"} <= set(by_part)
    assert details["cpu"]["create"]["operations"] > 0 and details["cpu"]["stage_change"]["operations"] > 0
    assert "11. CPU per operation by part" in report.table
    for rate in ("half_rate", "full_rate"):
        under_load = details["trigger_under_load"][rate]
        assert under_load["trigger_ms"]["count"] == under_load["changes"]["operations"] > 0
    for rate in ("half_rate", "full_rate"):  # every lead's webhook arrived, each measured from its commit
        webhooks = details["webhooks"][rate]
        assert webhooks["commit_to_received_ms"]["count"] == webhooks["creates"]["operations"] > 0
        assert webhooks["where_the_time_goes_ms"]["queued_to_received"]["count"] == webhooks["creates"]["operations"]
        assert webhooks["keeping_up"]["backlog_series_s_events"][-1][1] == 0
    assert details["webhooks"]["receiver_requests"] > details["webhooks"]["half_rate"]["creates"]["operations"]
    largest = details["catchup"]["largest_backlog"]
    assert largest["events"] == max(largest["consumed_by_group"].values()) > 0
    assert details["import"]["rows"] == 1000  # the smallest import, every row created (the figure checks)
    assert details["catchup"]["trigger_actions_applied"] == details["catchup"]["stage_changes"] > 0
    assert details["catchup"]["events_in_outboxes"] > 0
    for variant in ("cross_service", "same_service"):
        ryw = details["read_your_writes"][variant]
        assert ryw["token_ms"]["count"] == ryw["no_token_ms"]["count"] == TINY.samples
        assert ryw["goal"]["p50_limit_ms"] > 0 and ryw["goal"]["p99_limit_ms"] > 0  # figure 3's p99 is in it

    for title in FIGURES.values():
        assert title in report.table
    assert report.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.chart_path.stat().st_size > 10_000

    # What the bench added to the shared platform is gone again: its trigger and its list rows.
    admin = platform.auth(("admin",))
    import requests

    triggers = requests.get(f"{platform.gateway_url}/v1/triggers", headers=admin, timeout=30).json()["items"]
    assert not [t for t in triggers if t["name"].startswith("bench qualified")]
    hooks = requests.get(f"{platform.gateway_url}/v1/webhooks", headers=admin, timeout=30).json()["items"]
    assert not [h for h in hooks if h["description"] == webhook_load.DESCRIPTION]  # and its subscription
    leads = requests.get(f"{platform.gateway_url}/v1/leads", params={"office_id": "bench-list-100"},
                         headers=admin, timeout=30).json()["items"]
    assert leads == []
    for office in details["import"]["offices"]:  # and figure 9's imported leads
        assert requests.get(f"{platform.gateway_url}/v1/leads", params={"office_id": office},
                            headers=admin, timeout=30).json()["items"] == []

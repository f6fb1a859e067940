"""Monitoring: the alert rules and the dashboard use only metrics the code really exports, the
rules are well formed (promtool, when installed, also checks them and runs them on sample series:
each alert fires on a failing platform and stays quiet on a healthy one), and the dashboard reaches
Grafana's sidecar."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import CHART, NAMESPACE, REPO, Renderer
from prometheus_client import REGISTRY
from prometheus_client.utils import floatToGoString

PRODUCTION = CHART / "ci" / "production-values.yaml"
METRIC = re.compile(r"\b(crm_[a-z0-9_]+)\b")
# The alerts the platform's SREs rely on, by the metric each watches.
WATCHED = {
    "crm_http_requests_total": "5xx ratio",
    "crm_http_request_duration_seconds_bucket": "latency SLO",
    "crm_outbox_oldest_age_seconds": "outbox oldest age",
    "crm_consumer_lag": "consumer lag",
    "crm_dlq_messages_total": "DLQ growth",
    "crm_trigger_executions_total": "trigger failures",
    "crm_consistency_checks_total": "read-your-writes 503s",
    "crm_gateway_consistency_unavailable_total": "the gateway's read-your-writes 503s",
    "crm_webhook_attempts_total": "webhook delivery success",
    "crm_webhook_backlog_age_seconds": "webhook backlog age",
    "crm_webhook_disabled_endpoints": "disabled webhook endpoints",
}
# What the dashboard's Webhooks row shows, by the metric (or histogram bucket) each panel queries.
WEBHOOK_PANELS = {
    "crm_webhook_attempts_total": "delivery success rate",
    "crm_webhook_backlog_age_seconds": "backlog age per endpoint",
    "crm_webhook_backlog": "backlog per endpoint",
    "crm_webhook_disabled_endpoints": "disabled endpoints",
    "crm_webhook_delivery_seconds_bucket": "delivery latency",
}


def _metric_modules() -> list[str]:
    """Every module of the libraries and services that defines metrics with prometheus-client."""
    modules = []
    for source in sorted([*REPO.glob("libs/*/src/**/*.py"), *REPO.glob("services/*/src/**/*.py")]):
        text = source.read_text(encoding="utf-8")
        if "from prometheus_client import" in text and re.search(r"\b(Counter|Gauge|Histogram|Summary)\(", text):
            src = next(p for p in source.parents if p.name == "src")
            modules.append(".".join(source.relative_to(src).with_suffix("").parts))
    return modules


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """The names of every series the code exports (counters with _total, histograms with _bucket...)."""
    modules = _metric_modules()
    assert "crm_kit.metrics" in modules
    for module in modules:
        importlib.import_module(module)
    names = set(REGISTRY._names_to_collectors)  # noqa: SLF001 - the registry's own index of series names
    return {name for name in names if name.startswith("crm_")}


@pytest.fixture(scope="module")
def rule_groups(render: Renderer) -> list[dict[str, Any]]:
    (rule,) = render(PRODUCTION).of_kind("PrometheusRule")
    return rule["spec"]["groups"]


def _rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_use_only_exported_metrics_and_cover_what_sres_watch(rule_groups: list[dict[str, Any]],
                                                                         exported: set[str]) -> None:
    used = set()
    for rule in _rules(rule_groups):
        names = set(METRIC.findall(rule["expr"]))
        assert names, f"{rule['alert']} watches no crm_ metric"
        assert names <= exported, f"{rule['alert']} uses metrics nobody exports: {sorted(names - exported)}"
        assert f'namespace="{NAMESPACE}"' in rule["expr"], f"{rule['alert']} is not scoped to the release"
        used |= names
    missing = {WATCHED[m] for m in WATCHED if m not in used}
    assert not missing, f"no alert on: {sorted(missing)}"


def test_the_latency_slo_threshold_is_a_histogram_bucket(rule_groups: list[dict[str, Any]], render: Renderer) -> None:
    from crm_kit.metrics import LATENCY_BUCKETS

    threshold = render(PRODUCTION).values["monitoring"]["alerts"]["latency"]["thresholdSeconds"]
    assert threshold in LATENCY_BUCKETS
    slo = next(r for r in _rules(rule_groups) if "crm_http_request_duration_seconds_bucket" in r["expr"])
    # The `le` label as prometheus-client writes it, or the query matches no series.
    assert f'le="{floatToGoString(threshold)}"' in slo["expr"]


def test_the_dashboard_uses_only_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads((CHART / "files" / "dashboards" / "crm-platform.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names and names <= exported, f"{expr}: {sorted(names - exported)}"
    watched = {name for expr in exprs for name in METRIC.findall(expr)}
    assert set(WATCHED) <= watched


def _dashboard() -> dict[str, Any]:
    return json.loads((CHART / "files" / "dashboards" / "crm-platform.json").read_text(encoding="utf-8"))


def test_the_dashboards_panels_do_not_overlap() -> None:
    """Grafana's grid (24 columns): every panel within it, no two on the same cells, ids unique."""
    panels = _dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def _row(dashboard: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels under a row (up to the next row), the dashboard's panels being in grid order."""
    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"].startswith(title))
    rest = panels[start + 1:]
    end = next((i for i, p in enumerate(rest) if p["type"] == "row"), len(rest))
    return rest[:end]


def test_the_dashboard_has_a_webhooks_row() -> None:
    """Delivery success rate, backlog age and backlog per endpoint, disabled endpoints, latency p50/p99."""
    panels = _row(_dashboard(), "Webhooks")
    exprs = {target["expr"] for panel in panels for target in panel.get("targets", [])}
    by_metric = {name: [e for e in exprs if name in METRIC.findall(e)] for name in WEBHOOK_PANELS}
    missing = [WEBHOOK_PANELS[name] for name, found in by_metric.items() if not found]
    assert not missing, f"the Webhooks row lacks: {missing}"
    compact = {re.sub(r"\s+", "", e) for e in exprs}
    # Success rate: the delivered attempts over all attempts (0 before the first delivery, not "no data").
    assert any('crm_webhook_attempts_total{namespace="$namespace",result="delivered"}' in e and e.count("/") == 1
               and "vector(0)" in e for e in compact), by_metric["crm_webhook_attempts_total"]
    # Per endpoint: one series per subscription, whichever worker replica reports it.
    for name in ("crm_webhook_backlog_age_seconds", "crm_webhook_backlog"):
        assert any(f"maxby(subscription)({name}{{" in e for e in compact), by_metric[name]
    quantiles = {re.search(r"histogram_quantile\(([0-9.]+),", e).group(1)
                 for e in by_metric["crm_webhook_delivery_seconds_bucket"]}
    assert quantiles == {"0.5", "0.99"}
    for panel in panels:
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], target["expr"]


def test_the_dashboard_configmap_is_found_by_grafanas_sidecar(render: Renderer) -> None:
    (configmap,) = render(PRODUCTION).of_kind("ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = configmap["data"].values()
    assert json.loads(content) == json.loads((CHART / "files" / "dashboards" / "crm-platform.json").read_text())


def test_the_webhook_alerts(rule_groups: list[dict[str, Any]], render: Renderer) -> None:
    """Success ratio over 15 minutes (only with attempts), backlog age per subscription, disabled endpoints."""
    alerts = render(PRODUCTION).values["monitoring"]["alerts"]
    rules = {rule["alert"]: rule for rule in _rules(rule_groups)}
    success = rules["WebhookDeliverySuccessLow"]
    assert "[15m]" in success["expr"] and f"< {alerts['webhookSuccessRatio']}" in success["expr"]
    assert re.search(r"\band\b[^<]*crm_webhook_attempts_total[^<]*\) > 0$", success["expr"]), success["expr"]
    backlog = rules["WebhookBacklogOld"]
    assert "by (namespace, subscription)" in backlog["expr"]
    assert backlog["expr"].endswith(f"> {alerts['webhookBacklogAgeSeconds']}")
    assert backlog["for"] == "10m"
    disabled = f'crm_webhook_disabled_endpoints{{namespace="{NAMESPACE}"}}) > 0'
    assert rules["WebhookEndpointDisabled"]["expr"].endswith(disabled)
    for name in ("WebhookDeliverySuccessLow", "WebhookBacklogOld", "WebhookEndpointDisabled"):
        assert rules[name]["labels"]["severity"] == "warning"
        assert {"summary", "description"} <= set(rules[name]["annotations"])


def test_monitors_scrape_every_api_and_worker_keeping_the_services_label(render: Renderer) -> None:
    rendered = render(PRODUCTION)
    (service_monitor,) = rendered.of_kind("ServiceMonitor")
    (pod_monitor,) = rendered.of_kind("PodMonitor")
    label = rendered.values["monitoring"]["labels"]
    for monitor in (service_monitor, pod_monitor, *rendered.of_kind("PrometheusRule")):
        assert label.items() <= monitor["metadata"]["labels"].items()
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    api_services = [s for s in rendered.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert len(api_services) == len(rendered.values["services"])
    workers = [d for d in rendered.of_kind("Deployment")
               if pod_monitor["spec"]["selector"]["matchLabels"].items()
               <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert workers and all(d["metadata"]["name"].endswith("-worker") for d in workers)
    for endpoint in [*service_monitor["spec"]["endpoints"], *pod_monitor["spec"]["podMetricsEndpoints"]]:
        assert endpoint["path"] == "/metrics"
        assert endpoint["honorLabels"] is True  # else `service` becomes exported_service


def test_monitoring_is_off_unless_switched_on(render: Renderer) -> None:
    kinds = {doc["kind"] for doc in render().docs}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


# ----------------------------------------------------------------------------------- promtool

def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus; .ci/run installs it); "
                    "the rules' structure is checked above")
    return promtool


def _series(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in {"namespace": NAMESPACE, **labels}.items()) + "}"


def _unit_tests(rules_file: str, failing: bool) -> dict[str, Any]:
    """Sample series of a failing (or a healthy) platform, one minute apart, and what fires at 25m."""
    http = {"service": "leads", "method": "GET", "route": "/v1/leads"}
    bad = failing
    series = [
        ("crm_http_requests_total" + _series({**http, "status": "500"}), "0+10x40" if bad else "0x40"),
        ("crm_http_requests_total" + _series({**http, "status": "200"}), "0+90x40"),
        ("crm_http_request_duration_seconds_bucket" + _series({**http, "le": "0.25"}), "0+50x40" if bad else "0+99x40"),
        ("crm_http_request_duration_seconds_count" + _series(http), "0+100x40"),
        ("crm_outbox_oldest_age_seconds" + _series({"service": "linking"}), "0+60x40" if bad else "0x40"),
        ("crm_consumer_lag" + _series({"service": "triggers", "consumer": "evaluate", "topic": "crm.leads.v1",
                                       "partition": "0"}), "5000x40" if bad else "3x40"),
        # A counter that appears with its first dead letter still counts.
        ("crm_dlq_messages_total" + _series({"service": "leads", "consumer": "catalogue-view",
                                             "topic": "crm.catalogue.v1"}), "_x15 1x25" if bad else "_x40"),
        ("crm_worker_heartbeat_timestamp_seconds" + _series({"service": "leads", "loop": "outbox-relay"}),
         "0x40" if bad else "0+60x40"),
        ("crm_trigger_executions_total" + _series({"result": "failed"}), "0x15 1+1x25" if bad else "0x40"),
        ("crm_trigger_scheduler_lag_seconds" + _series({}), "600x40" if bad else "0x40"),
        # Read-your-writes: waiting and answering stale are healthy, 503s (timeout) are not.
        ("crm_consistency_checks_total" + _series({"service": "linking", "stage": "read_models", "result": "fresh"}),
         "0+100x40"),
        ("crm_consistency_checks_total" + _series({"service": "linking", "stage": "read_models", "result": "waited"}),
         "0+20x40"),
        ("crm_consistency_checks_total" + _series({"service": "linking", "stage": "read_models", "result": "stale"}),
         "0+2x40"),
        ("crm_consistency_checks_total" + _series({"service": "linking", "stage": "read_models", "result": "timeout"}),
         "0+3x40" if bad else "0x40"),
        ("crm_consistency_checks_total" + _series({"service": "leads", "stage": "outbox", "result": "waited"}),
         "0+5x40"),
        # No label of its own: `service` is the scrape target's (the Kubernetes Service's name).
        ("crm_gateway_consistency_unavailable_total" + _series({"service": "crm-platform-gateway"}),
         "0+2x40" if bad else "0x40"),
        # Webhooks: half the attempts failing, one subscription's backlog 20 minutes old, an endpoint disabled.
        ("crm_webhook_attempts_total" + _series({"result": "delivered"}), "0+5x40" if bad else "0+100x40"),
        ("crm_webhook_attempts_total" + _series({"result": "failed"}), "0+5x40" if bad else "0+1x40"),
        ("crm_webhook_backlog_age_seconds" + _series({"subscription": "sub-slow"}), "1200x40" if bad else "30x40"),
        ("crm_webhook_backlog_age_seconds" + _series({"subscription": "sub-fine"}), "5x40"),
        ("crm_webhook_disabled_endpoints" + _series({}), "1x40" if bad else "0x40"),
    ]
    # What fires, by alert: the labels of its one alert, or a list when it fires more than once.
    firing: dict[str, dict[str, str] | list[dict[str, str]]] = {
        "CrmHttp5xxRatioHigh": {"service": "leads", "severity": "critical"},
        "CrmLatencySLOBreached": {"service": "leads", "severity": "warning"},
        "CrmOutboxOldestAgeHigh": {"service": "linking", "severity": "critical"},
        "CrmConsumerLagHigh": {"service": "triggers", "consumer": "evaluate", "severity": "warning"},
        "CrmDeadLettersGrowing": {"service": "leads", "consumer": "catalogue-view", "topic": "crm.catalogue.v1",
                                  "severity": "warning"},
        "CrmWorkerLoopStalled": {"service": "leads", "loop": "outbox-relay", "severity": "critical"},
        "CrmTriggerExecutionsFailing": {"severity": "warning"},
        "CrmTriggerSchedulerLate": {"severity": "warning"},
        "CrmConsistencyUnavailable": [{"service": "linking", "severity": "warning"},
                                      {"service": "gateway", "severity": "warning"}],
        "WebhookDeliverySuccessLow": {"severity": "warning"},
        "WebhookBacklogOld": {"subscription": "sub-slow", "severity": "warning"},
        "WebhookEndpointDisabled": {"severity": "warning"},
    }
    return {
        "rule_files": [rules_file],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": name, "values": values} for name, values in series],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": alert,
                 "exp_alerts": [{"exp_labels": {"namespace": NAMESPACE, **one}}
                                for one in (labels if isinstance(labels, list) else [labels])] if failing else []}
                for alert, labels in firing.items()
            ],
        }],
    }


def _write_rules(tmp_path: Path, groups: list[dict[str, Any]]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    return path


def test_promtool_accepts_the_rules(rule_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = _promtool()
    out = subprocess.run([promtool, "check", "rules", str(_write_rules(tmp_path, rule_groups))],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("failing", [True, False], ids=["failing-platform", "healthy-platform"])
def test_alerts_fire_on_a_failing_platform_only(rule_groups: list[dict[str, Any]], tmp_path: Path,
                                                failing: bool) -> None:
    promtool = _promtool()
    # Annotations are templates for Alertmanager; the unit test compares labels only.
    groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
              for g in rule_groups]
    rules = _write_rules(tmp_path, groups)
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump(_unit_tests(rules.name, failing)), encoding="utf-8")
    out = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120,
                         check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


# Each case: the sample series (one minute apart) and whether the alert fires at 25m.
WEBHOOK_CASES: dict[str, tuple[str, list[tuple[str, str]], bool]] = {
    "85% delivered": ("WebhookDeliverySuccessLow",
                      [("attempts", "delivered", "0+85x40"), ("attempts", "failed", "0+15x40")], True),
    "95% delivered": ("WebhookDeliverySuccessLow",
                      [("attempts", "delivered", "0+95x40"), ("attempts", "error", "0+5x40")], False),
    # No attempt ever succeeded: the result="delivered" series does not exist at all.
    "nothing delivered yet": ("WebhookDeliverySuccessLow",
                              [("attempts", "error", "0+5x40"), ("attempts", "refused", "0+1x40")], True),
    "every attempt delivered": ("WebhookDeliverySuccessLow", [("attempts", "delivered", "0+10x40")], False),
    # Old failures, no attempt in the last 15 minutes: nothing to judge.
    "no attempts in the window": ("WebhookDeliverySuccessLow",
                                  [("attempts", "delivered", "0+1x5 5x35"), ("attempts", "failed", "0+9x5 45x35")],
                                  False),
    "backlog old for 10 minutes": ("WebhookBacklogOld", [("backlog_age", "sub-1", "30x13 1200x26")], True),
    "backlog old for only 7 minutes": ("WebhookBacklogOld", [("backlog_age", "sub-1", "30x17 1200x23")], False),
    "backlog just under the threshold": ("WebhookBacklogOld", [("backlog_age", "sub-1", "899x40")], False),
    "an endpoint disabled": ("WebhookEndpointDisabled", [("disabled", "", "0x20 1x20")], True),
}
_WEBHOOK_SERIES = {
    "attempts": ("crm_webhook_attempts_total", "result"),
    "backlog_age": ("crm_webhook_backlog_age_seconds", "subscription"),
    "disabled": ("crm_webhook_disabled_endpoints", ""),
}


@pytest.mark.parametrize("case", list(WEBHOOK_CASES))
def test_webhook_alerts_on_edge_cases(rule_groups: list[dict[str, Any]], tmp_path: Path, case: str) -> None:
    """The success ratio fires before any delivery succeeded and stays quiet without attempts; the backlog
    alert waits its 10 minutes and looks at each subscription."""
    promtool = _promtool()
    alert, samples, fires = WEBHOOK_CASES[case]
    groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
              for g in rule_groups if g["name"] == "crm-platform.webhooks"]
    rules = _write_rules(tmp_path, groups)
    series = []
    labels: dict[str, str] = {}
    for kind, label_value, values in samples:
        metric, label = _WEBHOOK_SERIES[kind]
        own = {label: label_value} if label else {}
        if kind != "attempts":
            labels = own
        series.append({"series": metric + _series(own), "values": values})
    expected = [{"exp_labels": {"namespace": NAMESPACE, **labels, "severity": "warning"}}] if fires else []
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series,
                   "alert_rule_test": [{"eval_time": "25m", "alertname": alert, "exp_alerts": expected}]}],
    }), encoding="utf-8")
    out = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120,
                         check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr

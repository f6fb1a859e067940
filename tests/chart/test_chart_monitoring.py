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


def test_the_dashboard_configmap_is_found_by_grafanas_sidecar(render: Renderer) -> None:
    (configmap,) = render(PRODUCTION).of_kind("ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = configmap["data"].values()
    assert json.loads(content) == json.loads((CHART / "files" / "dashboards" / "crm-platform.json").read_text())


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

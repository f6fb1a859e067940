"""Who can reach what, evaluated on the rendered NetworkPolicies the way Kubernetes does: only the
gateway is reachable from outside the release; the services only from the gateway (and metrics
scrapes); the domain services reach Kafka and their databases; every pod reaches DNS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chartkit import CHART, Renderer, ServiceFacts, component_of, pod_spec, service_of, values_files, values_id

VALUES = pytest.mark.parametrize("values_file", values_files(), ids=values_id)


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector against a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _pods(rendered: Any) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(service/component, pod labels, pod spec) of every workload."""
    return [(f"{service_of(w)}/{component_of(w)}", w["spec"]["template"]["metadata"]["labels"], pod_spec(w))
            for w in rendered.workloads()]


def _policies_for(rendered: Any, labels: dict[str, str], policy_type: str) -> list[dict[str, Any]]:
    return [p for p in rendered.of_kind("NetworkPolicy")
            if policy_type in p["spec"]["policyTypes"] and matches(p["spec"]["podSelector"], labels)]


def _is_open_peer(peer: dict[str, Any]) -> bool:
    """A peer that admits traffic from outside the release's own pods."""
    if "ipBlock" in peer:
        return True
    if "namespaceSelector" in peer:
        # Another namespace: open unless it also names the pods (e.g. Prometheus).
        return not (peer.get("podSelector") or {}).get("matchLabels") and \
            not (peer.get("podSelector") or {}).get("matchExpressions")
    return False


def _ingress_rules(rendered: Any, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [rule for policy in _policies_for(rendered, labels, "Ingress") for rule in policy["spec"].get("ingress", [])]


def _egress_ports(rendered: Any, labels: dict[str, str]) -> set[int]:
    ports = set()
    for policy in _policies_for(rendered, labels, "Egress"):
        for rule in policy["spec"].get("egress", []):
            ports |= {p["port"] for p in rule.get("ports", []) if isinstance(p["port"], int)}
    return ports


def _port_number(spec: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    for container in spec["containers"]:
        for item in container.get("ports", []):
            if item["name"] == port:
                return item["containerPort"]
    return -1  # a named port the pod does not have admits nothing on it


@VALUES
def test_only_the_gateway_is_reachable_from_outside(render: Renderer, values_file: Path | None) -> None:
    rendered = render(values_file)
    assert rendered.values["networkPolicy"]["enabled"]
    gateway_labels = next(labels for name, labels, _ in _pods(rendered) if name == "gateway/api")
    for name, labels, spec in _pods(rendered):
        assert _policies_for(rendered, labels, "Ingress"), f"{name} is selected by no ingress policy (open)"
        assert _policies_for(rendered, labels, "Egress"), f"{name} is selected by no egress policy (open)"
        rules = _ingress_rules(rendered, labels)
        open_rules = [r for r in rules if "from" not in r or any(_is_open_peer(p) for p in r["from"])]
        if name == "gateway/api":
            gateway_from = rendered.values["networkPolicy"]["gatewayFrom"]
            if not gateway_from:
                assert open_rules, "the gateway must be reachable from outside"
            for rule in open_rules:
                assert {_port_number(spec, p["port"]) for p in rule["ports"]} == {_port_number(spec, "http")}
            continue
        assert not open_rules, f"{name} is reachable from outside the release: {open_rules}"
        from_gateway = [r for r in rules if any("podSelector" in p and "namespaceSelector" not in p
                                                and matches(p["podSelector"], gateway_labels) for p in r["from"])]
        if name.endswith("/api"):
            assert from_gateway, f"{name} must be reachable from the gateway"
        else:
            assert not from_gateway, f"{name} takes no traffic from the gateway"
        # Besides the gateway, only the metrics scrapers (Prometheus) get in, and only to /metrics' port.
        scrape_port = _port_number(spec, "http" if name.endswith("/api") else "metrics")
        for rule in rules:
            if rule in from_gateway:
                continue
            assert rule["from"] == rendered.values["networkPolicy"]["metricsFrom"], rule
            assert {_port_number(spec, p["port"]) for p in rule["ports"]} - {-1} == {scrape_port}


@VALUES
def test_pods_reach_dns_and_the_domain_services_kafka_and_databases(render: Renderer, values_file: Path | None,
                                                                   services: dict[str, ServiceFacts]) -> None:
    rendered = render(values_file)
    np = rendered.values["networkPolicy"]
    for name, labels, _ in _pods(rendered):
        ports = _egress_ports(rendered, labels)
        assert 53 in ports, f"{name} cannot resolve names"
        if services[labels["app.kubernetes.io/name"]].role == "domain":
            assert set(np["kafka"]["ports"]) <= ports, f"{name} cannot reach Kafka"
            assert set(np["databases"]["ports"]) <= ports, f"{name} cannot reach its database"
        else:
            assert not set(np["databases"]["ports"]) & ports, f"{name} has no database to reach"


def test_the_ingress_routes_only_the_public_api_to_the_gateway(render: Renderer) -> None:
    rendered = render(CHART / "ci" / "production-values.yaml")
    (ingress,) = rendered.of_kind("Ingress")
    gateway_service = next(s for s in rendered.of_kind("Service")
                           if s["spec"]["selector"]["app.kubernetes.io/name"] == "gateway")
    paths = set()
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] == gateway_service["metadata"]["name"]
            paths.add(path["path"])
    assert "/v1" in paths
    assert not paths & {"/", "/metrics", "/readyz", "/healthz"}, "operational endpoints stay inside the cluster"
    assert ingress["spec"]["tls"], "the production-like values terminate TLS at the ingress"

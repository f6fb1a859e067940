"""Who can reach what, evaluated on the rendered NetworkPolicies the way Kubernetes does: only the
gateway and the console are reachable from outside the release; the services only from the gateway
(and metrics scrapes); the domain services reach Kafka and their databases; the console only the
gateway (and the OpenID provider when it signs in there); the webhooks worker alone reaches the
customers' endpoints on the internet, never a private address; every pod reaches DNS."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from chartkit import (
    CHART,
    NAMESPACE,
    Renderer,
    ServiceFacts,
    component_of,
    pod_spec,
    service_of,
    values_files,
    values_id,
)

VALUES = pytest.mark.parametrize("values_file", values_files(), ids=values_id)
PRODUCTION = CHART / "ci" / "production-values.yaml"
# Reachable from outside the release (through the ingress controller).
PUBLIC = {"gateway/api": "gatewayFrom", "console/api": "console"}
# Where the cluster's pods and Services live: an ipBlock that leaves these out reaches no pod.
PRIVATE_RANGES = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
# Addresses a webhook must never be delivered to: the cluster's and private networks, the shared range,
# link-local (the cloud metadata endpoint).
NON_PUBLIC = ["10.0.0.7", "10.96.0.1", "172.16.4.2", "172.31.255.1", "192.168.1.10", "100.64.0.1",
              "169.254.169.254"]
CUSTOMER_ENDPOINTS = ["203.0.113.10", "198.51.100.20", "8.8.8.8"]


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


def _labels_of(rendered: Any, name: str) -> dict[str, str]:
    return next(labels for pod, labels, _ in _pods(rendered) if pod == name)


def _peer_selects_release_pod(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicyPeer selects a pod of the release (in its namespace) with these labels."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer and not matches(peer["namespaceSelector"],
                                                   {"kubernetes.io/metadata.name": NAMESPACE}):
        return False
    return matches(peer.get("podSelector") or {}, labels)


def _rule_admits(rule: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether an ingress rule admits traffic from a release pod with these labels."""
    return "from" not in rule or any(_peer_selects_release_pod(p, labels) for p in rule["from"])


def _ip_block_may_reach_pods(block: dict[str, Any]) -> bool:
    """An ipBlock reaches the cluster's pods unless it leaves every private range out."""
    cidr = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
    for private in PRIVATE_RANGES:
        if private.version != cidr.version or not cidr.overlaps(private):
            continue
        if not any(private.version == e.version and private.subnet_of(e) for e in excepted):
            return True
    return False


def _egress_reaches(rendered: Any, source: dict[str, str], target: dict[str, str], port: int) -> bool:
    """Whether the pods with labels `source` may open connections to a release pod `target` on `port`."""
    for policy in _policies_for(rendered, source, "Egress"):
        for rule in policy["spec"].get("egress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            if "to" not in rule:
                return True
            for peer in rule["to"]:
                if "ipBlock" in peer and _ip_block_may_reach_pods(peer["ipBlock"]):
                    return True
                if "ipBlock" not in peer and _peer_selects_release_pod(peer, target):
                    return True
    return False


@VALUES
def test_only_the_gateway_and_the_console_are_reachable_from_outside(render: Renderer,
                                                                    values_file: Path | None) -> None:
    rendered = render(values_file)
    np = rendered.values["networkPolicy"]
    assert np["enabled"]
    gateway_labels = _labels_of(rendered, "gateway/api")
    console_labels = _labels_of(rendered, "console/api")
    for name, labels, spec in _pods(rendered):
        assert _policies_for(rendered, labels, "Ingress"), f"{name} is selected by no ingress policy (open)"
        assert _policies_for(rendered, labels, "Egress"), f"{name} is selected by no egress policy (open)"
        rules = _ingress_rules(rendered, labels)
        open_rules = [r for r in rules if "from" not in r or any(_is_open_peer(p) for p in r["from"])]
        from_gateway = [r for r in rules if any("podSelector" in p and "namespaceSelector" not in p
                                                and matches(p["podSelector"], gateway_labels)
                                                for p in r.get("from", []))]
        from_console = [r for r in rules if any("podSelector" in p and "namespaceSelector" not in p
                                                and matches(p["podSelector"], console_labels)
                                                for p in r.get("from", []))]
        http = _port_number(spec, "http")
        if name in PUBLIC:
            peers = np["gatewayFrom"] if name == "gateway/api" else (np["console"]["from"] or np["gatewayFrom"])
            if not peers:
                assert open_rules, f"{name} must be reachable from outside"
            else:
                assert any(r.get("from") == peers for r in rules), f"{name} must be reachable from {peers}"
            for rule in open_rules:
                assert {_port_number(spec, p["port"]) for p in rule["ports"]} == {http}, name
            # In Kubernetes the ingress routes to the console: the gateway never calls it.
            assert not (name == "console/api" and from_gateway), "the console takes no traffic from the gateway"
            continue
        assert not open_rules, f"{name} is reachable from outside the release: {open_rules}"
        assert not from_console, f"{name} takes no traffic from the console"
        if name.endswith("/api"):
            assert from_gateway, f"{name} must be reachable from the gateway"
        else:
            assert not from_gateway, f"{name} takes no traffic from the gateway"
        # Besides the gateway, only the metrics scrapers (Prometheus) get in, and only to /metrics' port.
        scrape_port = _port_number(spec, "http" if name.endswith("/api") else "metrics")
        for rule in rules:
            if rule in from_gateway:
                continue
            assert rule["from"] == np["metricsFrom"], rule
            assert {_port_number(spec, p["port"]) for p in rule["ports"]} - {-1} == {scrape_port}


@VALUES
def test_the_gateway_takes_the_consoles_requests(render: Renderer, values_file: Path | None) -> None:
    """Even when only the ingress controller may reach the gateway (gatewayFrom), the console may."""
    rendered = render(values_file)
    console_labels = _labels_of(rendered, "console/api")
    gateway_labels = _labels_of(rendered, "gateway/api")
    gateway_spec = next(spec for name, _, spec in _pods(rendered) if name == "gateway/api")
    http = _port_number(gateway_spec, "http")
    admitting = [r for r in _ingress_rules(rendered, gateway_labels) if _rule_admits(r, console_labels)
                 and http in {_port_number(gateway_spec, p["port"]) for p in r.get("ports", [])}]
    assert admitting, "the gateway's ingress policy must admit the console"
    assert _egress_reaches(rendered, console_labels, gateway_labels, http), "the console must reach the gateway"


@VALUES
def test_the_console_reaches_only_the_gateway(render: Renderer, values_file: Path | None) -> None:
    """No service api, worker, database or Kafka: the gateway's /v1 is the console's only backend."""
    rendered = render(values_file)
    np = rendered.values["networkPolicy"]
    console_labels = _labels_of(rendered, "console/api")
    reached = set()
    for name, labels, spec in _pods(rendered):
        for container in spec["containers"]:
            for port in container.get("ports", []):
                if _egress_reaches(rendered, console_labels, labels, port["containerPort"]):
                    reached.add(name)
    assert reached == {"gateway/api"}
    ports = _egress_ports(rendered, console_labels)
    assert not set(np["databases"]["ports"]) & ports, "the console has no database to reach"
    assert not set(np["kafka"]["ports"]) & ports, "the console has no Kafka to reach"


def _identity_provider_pods(rendered: Any) -> set[str]:
    """The pods whose egress reaches the identity provider's peers on its ports."""
    provider = rendered.values["networkPolicy"]["identityProvider"]
    reaching = set()
    for name, labels, _ in _pods(rendered):
        for policy in _policies_for(rendered, labels, "Egress"):
            if not policy["metadata"]["name"].endswith("-identity-provider"):
                continue
            for rule in policy["spec"]["egress"]:
                if rule.get("to", []) == provider["to"] and \
                        {p["port"] for p in rule["ports"]} == set(provider["ports"]):
                    reaching.add(name)
    return reaching


def test_only_who_talks_to_the_identity_provider_reaches_it(render: Renderer) -> None:
    """The console when it signs in with OpenID Connect, every api when it fetches the JWKS; nobody by
    default. The default peer is the internet without the private ranges: no pod of the cluster."""
    assert _identity_provider_pods(render()) == set()
    for peer in render().values["networkPolicy"]["identityProvider"]["to"]:
        assert not _ip_block_may_reach_pods(peer["ipBlock"])
    oidc = render(sets=("services.console.config.consoleOidcIssuer=https://login.example.com/",
                        "services.console.config.consoleOidcClientId=crm-console"))
    assert _identity_provider_pods(oidc) == {"console/api"}
    jwks = render(sets=("config.jwtJwksUrl=https://login.example.com/jwks",))
    apis = {name for name, _, _ in _pods(jwks) if name.endswith("/api")}
    assert _identity_provider_pods(jwks) == apis


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


def _route(paths: list[dict[str, Any]], request_path: str) -> str | None:
    """The Service an Ingress rule sends a request path to: Kubernetes' Prefix matching (whole path
    elements), the longest match winning; Exact before Prefix of the same length."""
    elements = [e for e in request_path.split("/") if e]
    best: tuple[int, int, str] | None = None
    for path in paths:
        candidate = [e for e in path["path"].split("/") if e]
        if path["pathType"] == "Exact":
            hit, rank = candidate == elements, 1
        else:
            hit, rank = elements[:len(candidate)] == candidate, 0
        if hit and (best is None or (len(candidate), rank) > best[:2]):
            best = (len(candidate), rank, path["backend"]["service"]["name"])
    return None if best is None else best[2]


def test_the_ingress_routes_the_api_to_the_gateway_and_the_rest_to_the_console(render: Renderer) -> None:
    rendered = render(PRODUCTION)
    (ingress,) = rendered.of_kind("Ingress")
    by_service = {s["spec"]["selector"]["app.kubernetes.io/name"]: s["metadata"]["name"]
                  for s in rendered.of_kind("Service")}
    gateway, console = by_service["gateway"], by_service["console"]
    assert ingress["spec"]["rules"]
    for rule in ingress["spec"]["rules"]:
        paths = rule["http"]["paths"]
        # One host for both: the API and its contract to the gateway...
        for path in ("/v1", "/v1/leads/123", "/openapi.json", "/docs"):
            assert _route(paths, path) == gateway, path
        # ...every other path, the console's pages and static files, to the console.
        for path in ("/", "/leads", "/opportunities/board", "/static/vendor/htmx.min.js", "/v1x", "/signin"):
            assert _route(paths, path) == console, path
        # The gateway's operational endpoints are never routed to it.
        for path in ("/metrics", "/readyz", "/healthz"):
            assert _route(paths, path) != gateway, path
        assert {p["backend"]["service"]["port"]["name"] for p in paths} == {"http"}
    assert ingress["spec"]["tls"], "the production-like values terminate TLS at the ingress"


def _egress_reaches_address(rendered: Any, source: dict[str, str], address: str, port: int) -> bool:
    """Whether the pods with labels `source` may open connections to an IP address outside the cluster's
    pods on `port`: a rule without `to`, or an ipBlock that holds the address."""
    ip = ipaddress.ip_address(address)
    for policy in _policies_for(rendered, source, "Egress"):
        for rule in policy["spec"].get("egress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            if "to" not in rule:
                return True
            for peer in rule["to"]:
                block = peer.get("ipBlock")
                if block and ip in ipaddress.ip_network(block["cidr"]) and \
                        not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                    return True
    return False


def test_only_the_webhooks_worker_reaches_the_customers_endpoints(render: Renderer) -> None:
    """The worker delivers to public addresses on 443 and 80; its api, and every other pod, cannot; the
    worker reaches no private, shared or link-local address on those ports (its database, Kafka and DNS
    are on their own ports, checked above)."""
    rendered = render()
    ports = rendered.values["networkPolicy"]["webhooks"]["ports"]
    assert set(ports) == {443, 80}
    for name, labels, _ in _pods(rendered):
        for address in CUSTOMER_ENDPOINTS:
            for port in ports:
                reaches = _egress_reaches_address(rendered, labels, address, port)
                assert reaches == (name == "webhooks/worker"), f"{name} -> {address}:{port}"
    worker = _labels_of(rendered, "webhooks/worker")
    for address in NON_PUBLIC:
        for port in ports:
            assert not _egress_reaches_address(rendered, worker, address, port), f"{address}:{port}"
    # Nor any pod of the release on those ports.
    for name, labels, _ in _pods(rendered):
        for port in ports:
            assert not _egress_reaches(rendered, worker, labels, port), f"webhooks/worker -> {name}:{port}"


@VALUES
def test_the_webhooks_delivery_policy_leaves_the_private_ranges_out(render: Renderer,
                                                                    values_file: Path | None) -> None:
    rendered = render(values_file)
    np = rendered.values["networkPolicy"]
    (policy,) = [p for p in rendered.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-webhooks-delivery")]
    selected = [name for name, labels, _ in _pods(rendered) if matches(policy["spec"]["podSelector"], labels)]
    assert selected == ["webhooks/worker"]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    (rule,) = policy["spec"]["egress"]
    assert rule["to"] == np["webhooks"]["to"]
    assert {p["port"] for p in rule["ports"]} == set(np["webhooks"]["ports"])
    for peer in rule["to"]:
        assert not _ip_block_may_reach_pods(peer["ipBlock"])
        excepted = {ipaddress.ip_network(e) for e in peer["ipBlock"]["except"]}
        assert {ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("100.64.0.0/10")} <= excepted

"""The rendered workloads against the code they run: every service deployed with the right
components, every container probed, bounded and locked down, every setting a service requires set
(the settings table decides which), values that parse the way the service parses them, and images
and ports that match skaffold.yaml and the services."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from chartkit import (
    CHART,
    REPO,
    Renderer,
    ServiceFacts,
    component_of,
    default_values,
    env_of,
    pod_spec,
    service_of,
    values_files,
    values_id,
)

from crm_kit.settings import SETTINGS, load_settings

VALUES = pytest.mark.parametrize("values_file", values_files(), ids=values_id)
PRODUCTION = CHART / "ci" / "production-values.yaml"
# Read by the process but not a setting of the table: gunicorn's bind address (crm_kit.web.gunicorn_conf).
PROCESS_VARIABLES = {"CRM_BIND"}
SECRET_PLACEHOLDER = "from-a-secret"
# Settings the chart never sets, nor lets values set: http:// deliveries to loopback are for `make run` and tests.
NEVER_SET = {"CRM_WEBHOOK_ALLOW_LOOPBACK"}


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_spec(workload)["containers"]


def _port(container: dict[str, Any], name_or_number: Any) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert name_or_number in ports, f"{container['name']} has no port named {name_or_number}"
    return ports[name_or_number]


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process would see it, a secret reference standing for a
    value of the right shape (the setting's default when it has one)."""
    defaults = {s.env: s.default for s in SETTINGS}
    env = {}
    for name, item in env_of(container).items():
        env[name] = item["value"] if "value" in item else (defaults.get(name) or SECRET_PLACEHOLDER)
    return env


@VALUES
def test_every_service_runs_with_the_components_its_code_has(render: Renderer, values_file: Path | None,
                                                             services: dict[str, ServiceFacts]) -> None:
    rendered = render(values_file)
    deployed = {(service_of(w), component_of(w)) for w in rendered.workloads()}
    expected = set()
    for name, facts in services.items():
        expected.add((name, "api"))
        if facts.has_worker:
            expected.add((name, "worker"))
        if facts.has_migrations:
            expected.add((name, "migrate"))
    assert deployed == expected
    chart_services = rendered.values["services"]
    assert set(chart_services) == set(services)
    for name, facts in services.items():
        assert chart_services[name]["role"] == facts.role, f"services.{name}.role"
        assert chart_services[name]["attachments"] == facts.stores_attachments, f"services.{name}.attachments"


@VALUES
def test_every_long_running_container_has_probes_resources_and_a_locked_down_context(
        render: Renderer, values_file: Path | None) -> None:
    for workload in render(values_file).workloads():
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"], where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _containers(workload):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["runAsUser"] != 0, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert set(mounts.values()) <= set(volumes), where
            # The writable places the processes use, on a read-only root filesystem.
            env = _environment(container)
            writable = ["/tmp", env["PROMETHEUS_MULTIPROC_DIR"]]
            if env.get("CRM_ATTACHMENTS_STORE") == "local":
                writable.append(env["CRM_ATTACHMENTS_DIR"])
            for path in writable:
                assert path in mounts, f"{where}: {path} is not a mounted volume"
            if workload["kind"] == "Job":
                continue  # a hook Job runs to completion: no probes
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{where} has no {probe}"
                get = container[probe]["httpGet"]
                _port(container, get["port"])
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where


@VALUES
def test_every_setting_a_service_requires_is_set_and_every_value_parses(
        render: Renderer, values_file: Path | None, services: dict[str, ServiceFacts]) -> None:
    known = {setting.env for setting in SETTINGS} | PROCESS_VARIABLES
    for workload in render(values_file).workloads():
        name = service_of(workload)
        for container in _containers(workload):
            env = _environment(container)
            assert env["CRM_SERVICE_NAME"] == name
            # As the loader decides: for every process, for the service's role, or for the service itself.
            required = {s.env for s in SETTINGS
                        if {"all", services[name].role, name} & set(s.required_for)}
            missing = required - set(env)
            assert not missing, f"{workload['metadata']['name']} lacks required settings {sorted(missing)}"
            unknown = {var for var in env if var.startswith("CRM_")} - known
            assert not unknown, f"{workload['metadata']['name']} sets variables no service reads: {sorted(unknown)}"
            # The service's own loader accepts the environment: types, JSON, booleans all parse.
            settings = load_settings(services[name].role, env)
            for var in env.keys() & (known - PROCESS_VARIABLES):
                assert settings[var] is not None, var
            for item in env_of(container).values():
                if "valueFrom" in item:
                    ref = item["valueFrom"]["secretKeyRef"]
                    assert ref["name"] and ref["key"], item["name"]


def test_secrets_are_only_referenced(render: Renderer) -> None:
    secret_settings = {s.env for s in SETTINGS if s.secret} | {"CRM_DATABASE_URL", "CRM_KAFKA_EXTRA"}
    for values_file in values_files():
        rendered = render(values_file)
        assert not rendered.of_kind("Secret"), "the chart must not create Secrets"
        for workload in rendered.workloads():
            for container in _containers(workload):
                for var, item in env_of(container).items():
                    if var in secret_settings and not (var == "CRM_KAFKA_EXTRA" and "value" in item):
                        assert "valueFrom" in item, f"{var} must come from a Secret"


def _as_env(value: Any) -> str:
    """A values entry as the chart renders it into the environment (crm.envValue)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def test_every_setting_of_the_table_can_be_configured() -> None:
    """Each variable of the settings table is either set by the chart itself or a config value;
    each config value names a real setting and defaults to the service's own default."""
    values = default_values()
    config_maps = [values["config"], values["domainConfig"],
                   *(svc.get("config", {}) for svc in values["services"].values())]
    by_env = {s.env: s for s in SETTINGS}
    configurable = set()
    for config in config_maps:
        for key, value in config.items():
            var = "CRM_" + re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
            assert var in by_env, f"config key {key} names no setting ({var})"
            assert var not in NEVER_SET, f"config key {key} sets {var}, which the chart must never set"
            configurable.add(var)
            if value in ("", {}, [], None):
                continue  # left unset: the service's own default applies
            setting = by_env[var]
            assert setting.default is not None, f"{key}: {var} has no default to agree with"
            assert setting.parse(_as_env(value)) == setting.parse(setting.default), \
                f"{key}: chart default {value!r}, service default {setting.default!r}"
    templates = "\n".join(p.read_text(encoding="utf-8") for p in (CHART / "templates").iterdir())
    set_by_chart = {var for var in by_env if re.search(rf"\b{var}\b", templates)}
    set_by_chart |= {f"CRM_{name.upper()}_URL" for name in values["services"]} & set(by_env)  # gateway URLs
    assert not set_by_chart & NEVER_SET, f"templates set {sorted(set_by_chart & NEVER_SET)}"
    assert NEVER_SET <= set(by_env), "NEVER_SET names settings that do not exist"
    unconfigurable = set(by_env) - configurable - set_by_chart - NEVER_SET
    assert not unconfigurable, f"settings the chart cannot set: {sorted(unconfigurable)}"


@VALUES
def test_the_chart_never_allows_loopback_webhooks(render: Renderer, values_file: Path | None) -> None:
    for workload in render(values_file).workloads():
        for container in _containers(workload):
            env = _environment(container)
            assert not NEVER_SET & set(env), f"{workload['metadata']['name']} sets {sorted(NEVER_SET & set(env))}"
            if service_of(workload) == "webhooks":
                assert load_settings("domain", env)["CRM_WEBHOOK_ALLOW_LOOPBACK"] is False


def _workload(rendered: Any, service: str, component: str) -> dict[str, Any]:
    found = [w for w in rendered.workloads() if service_of(w) == service and component_of(w) == component]
    assert len(found) == 1, (service, component)
    return found[0]


@VALUES
def test_ports_agree_between_processes_services_and_the_gateway(render: Renderer, values_file: Path | None) -> None:
    rendered = render(values_file)
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    for workload in rendered.of_kind("Deployment"):
        container = _containers(workload)[0]
        env = _environment(container)
        if component_of(workload) == "api":
            bind_port = int(env["CRM_BIND"].rsplit(":", 1)[1])
            assert _port(container, "http") == bind_port
            service = services[workload["metadata"]["name"]]
            assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
            (port,) = service["spec"]["ports"]
            assert port["targetPort"] == "http"
        else:
            assert _port(container, "metrics") == int(env["CRM_WORKER_PORT"])
    gateway = _environment(_containers(_workload(rendered, "gateway", "api"))[0])
    # The gateway's service URLs (CRM_<SERVICE>_URL; other *_URL settings, e.g. the JWKS, are not services).
    domain = [name for name, svc in rendered.values["services"].items() if svc["role"] == "domain"]
    for name in domain:
        parts = urlsplit(gateway[f"CRM_{name.upper()}_URL"])
        service = services[parts.hostname]
        assert service["spec"]["selector"]["app.kubernetes.io/name"] == name
        assert service["spec"]["ports"][0]["port"] == parts.port


def _skaffold() -> dict[str, Any]:
    return yaml.safe_load((REPO / "skaffold.yaml").read_text(encoding="utf-8"))


def test_images_follow_skaffold(render: Renderer, services: dict[str, ServiceFacts]) -> None:
    """skaffold's value templates set each service's image; every pod of that service runs it."""
    templates = _skaffold()["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    sets = []
    for key in templates:
        _, service, field = key.split(".")
        sets.append(f"{key}={'registry.test/built-' + service if field == 'repository' else 'tag-' + service}")
    rendered = render(sets=tuple(sorted(sets)))
    for workload in rendered.workloads():
        name = service_of(workload)
        for container in _containers(workload):
            assert container["image"] == f"registry.test/built-{name}:tag-{name}"
    default = render()
    repository = default.values["image"]["repository"]
    for workload in default.workloads():
        image = _containers(workload)[0]["image"]
        assert image.startswith(f"{repository}-{service_of(workload)}:"), image


def test_migrations_are_hooks_that_run_before_install_and_upgrade(render: Renderer) -> None:
    rendered = render()
    for job in rendered.of_kind("Job"):
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert _containers(job)[0]["args"] == ["migrate"]
        account = pod_spec(job)["serviceAccountName"]
        # A hook runs before the release's resources exist: its ServiceAccount must be an earlier hook.
        sa = rendered.named("ServiceAccount", account)
        assert "pre-install" in sa["metadata"]["annotations"]["helm.sh/hook"]
        assert int(sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    for deployment in rendered.of_kind("Deployment"):
        rendered.named("ServiceAccount", pod_spec(deployment)["serviceAccountName"])


def test_autoscalers_and_disruption_budgets_point_at_the_apis(render: Renderer) -> None:
    rendered = render(PRODUCTION)
    deployments = {d["metadata"]["name"]: d for d in rendered.of_kind("Deployment")}
    hpas = rendered.of_kind("HorizontalPodAutoscaler")
    apis = {name for name, d in deployments.items() if component_of(d) == "api"}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == apis
    for name in apis:
        assert "replicas" not in deployments[name]["spec"], f"{name}: the HPA owns the replica count"
    selectors = [p["spec"]["selector"]["matchLabels"] for p in rendered.of_kind("PodDisruptionBudget")]
    for name in apis:
        assert deployments[name]["spec"]["selector"]["matchLabels"] in selectors
    # The triggers worker runs two replicas there: it gets a budget too.
    assert deployments["crm-platform-triggers-worker"]["spec"]["selector"]["matchLabels"] in selectors


def test_workers_roll_without_stopping_the_relay_first(render: Renderer) -> None:
    """A second relay waits on the advisory lock, so a rolling update is safe and has no gap."""
    for deployment in render().of_kind("Deployment"):
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        if component_of(deployment) == "worker":
            assert deployment["spec"]["replicas"] == 1


def test_attachments_use_the_configured_store(render: Renderer, services: dict[str, ServiceFacts]) -> None:
    storing = sorted(name for name, facts in services.items() if facts.stores_attachments)
    assert storing
    production = render(PRODUCTION)
    for name in storing:
        env = _environment(_containers(_workload(production, name, "api"))[0])
        assert env["CRM_ATTACHMENTS_STORE"] == "s3"
        assert env["CRM_ATTACHMENTS_S3_BUCKET"] == production.values["attachments"]["s3"]["bucket"]
    default = render()
    claim = default.of_kind("PersistentVolumeClaim")[0]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for name in storing:
        api = _workload(default, name, "api")
        volumes = {v["name"]: v for v in pod_spec(api)["volumes"]}
        assert volumes["attachments"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        mount = next(m for m in _containers(api)[0]["volumeMounts"] if m["name"] == "attachments")
        assert mount["subPath"] == name


# ----------------------------------------------------------------------------------- the console

def test_the_console_is_an_api_locked_down_and_probed(render: Renderer, services: dict[str, ServiceFacts]) -> None:
    """The browser console: one Deployment + Service, no worker or migrations, non-root on a read-only
    root filesystem with only /tmp and the metrics directory writable, probed on /healthz and /readyz."""
    assert services["console"].role == "console"
    for values_file in values_files():
        rendered = render(values_file)
        assert {component_of(w) for w in rendered.workloads() if service_of(w) == "console"} == {"api"}
        console = _workload(rendered, "console", "api")
        rendered.named("Service", console["metadata"]["name"])
        spec = pod_spec(console)
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = _containers(console)
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        env = _environment(container)
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"/tmp", env["PROMETHEUS_MULTIPROC_DIR"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        # No database, no Kafka: the gateway's /v1 is its only backend.
        assert not {"CRM_DATABASE_URL", "CRM_KAFKA_BOOTSTRAP"} & set(env)
        gateway = urlsplit(env["CRM_GATEWAY_URL"])
        service = rendered.named("Service", gateway.hostname)
        assert service["spec"]["selector"]["app.kubernetes.io/name"] == "gateway"
        assert service["spec"]["ports"][0]["port"] == gateway.port
        # Its keys come from Secrets; the OpenID client secret only when it signs in there.
        items = env_of(container)
        assert "secretKeyRef" in items["CRM_CONSOLE_SECRET_KEY"]["valueFrom"]
        issuer = env.get("CRM_CONSOLE_OIDC_ISSUER")
        assert ("CRM_CONSOLE_OIDC_CLIENT_SECRET" in items) == bool(issuer), values_id(values_file)
        if issuer:
            assert "secretKeyRef" in items["CRM_CONSOLE_OIDC_CLIENT_SECRET"]["valueFrom"]
            assert env["CRM_CONSOLE_OIDC_CLIENT_ID"]
        # The gateway forwards nothing to the console in Kubernetes: the ingress routes.
        assert "CRM_CONSOLE_URL" not in _environment(_containers(_workload(rendered, "gateway", "api"))[0])


def _dev_signin(rendered: Any) -> bool:
    env = _environment(_containers(_workload(rendered, "console", "api"))[0])
    return load_settings("console", env)["CRM_CONSOLE_DEV_SIGNIN"]


def test_the_console_dev_signin_is_off_unless_explicitly_set(render: Renderer) -> None:
    """The development sign-in mints tokens for anyone: never on unless someone sets it."""
    assert default_values()["services"]["console"]["config"]["consoleDevSignin"] is False
    for values_file in values_files():
        assert _dev_signin(render(values_file)) is False, values_id(values_file)
    assert _dev_signin(render(sets=("services.console.config.consoleDevSignin=true",))) is True
    # skaffold turns it on for `skaffold dev` (a local cluster) only, never for `skaffold run -p ci`.
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text(encoding="utf-8"))
    assert "setValues" not in config["deploy"]["helm"]["releases"][0]
    for profile in config["profiles"]:
        for patch in profile.get("patches", []):
            if "consoleDevSignin" in json.dumps(patch.get("value")):
                assert profile["name"] == "dev" and profile["activation"] == [{"command": "dev"}]


# ----------------------------------------------------------------------------------- webhooks

@VALUES
def test_the_webhooks_service_runs_with_its_keys_from_a_secret(render: Renderer, values_file: Path | None,
                                                               services: dict[str, ServiceFacts]) -> None:
    """An api, a worker and a migration Job like every domain service; CRM_WEBHOOK_SECRETS_KEY (which
    encrypts the subscriptions' signing secrets; the settings loader requires it in every webhooks
    process) in each, from a Secret, never a value; the gateway reaches its api through CRM_WEBHOOKS_URL."""
    assert services["webhooks"].role == "domain"
    rendered = render(values_file)
    own = rendered.values["services"]["webhooks"]
    secret = own["secretsKeySecret"]["name"] or rendered.values["existingSecret"]
    key = own["secretsKeySecret"]["key"] or "CRM_WEBHOOK_SECRETS_KEY"
    database = own["databaseSecret"]["key"] or "CRM_DATABASE_URL_WEBHOOKS"
    for component, kind in (("api", "Deployment"), ("worker", "Deployment"), ("migrate", "Job")):
        workload = _workload(rendered, "webhooks", component)
        assert workload["kind"] == kind
        assert workload["metadata"]["name"] == f"crm-platform-webhooks-{component}"
        (container,) = _containers(workload)
        assert container["args"] == [component]
        items = env_of(container)
        assert items["CRM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == database
        assert items["CRM_WEBHOOK_SECRETS_KEY"] == {
            "name": "CRM_WEBHOOK_SECRETS_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        settings = load_settings("domain", _environment(container))
        assert settings["CRM_WEBHOOK_SECRETS_KEY"], "the keys parse"
    # Nobody else holds the keys.
    holders = {service_of(w) for w in rendered.workloads()
               for c in _containers(w) if "CRM_WEBHOOK_SECRETS_KEY" in env_of(c)}
    assert holders == {"webhooks"}
    gateway = _environment(_containers(_workload(rendered, "gateway", "api"))[0])
    url = urlsplit(gateway["CRM_WEBHOOKS_URL"])
    service = rendered.named("Service", url.hostname)
    assert service["spec"]["selector"] == _workload(rendered, "webhooks", "api")["spec"]["selector"]["matchLabels"]


def test_the_webhooks_keys_are_never_a_value(render: Renderer) -> None:
    """The keys can only come from a Secret: values that would carry them are refused by the schema."""
    for values_file in values_files():
        text = (values_file or CHART / "values.yaml").read_text(encoding="utf-8")
        assert "webhookSecretsKey" not in text
    refused = {
        ("services.webhooks.config.webhookSecretsKey=a-key",): "webhookSecretsKey",
        ("services.webhooks.secretsKeySecret.value=a-key",): "value",
        ("services.webhooks.config.webhookAllowLoopback=true",): "webhookAllowLoopback",
        ("extraEnv[0].name=CRM_WEBHOOK_ALLOW_LOOPBACK", "extraEnv[0].value=true"): "extraEnv",
    }
    for sets, named in refused.items():
        out = render.run(sets=sets)
        assert out.returncode != 0, sets
        assert named in out.stderr, out.stderr
    assert render.run(sets=("extraEnv[0].name=TZ", "extraEnv[0].value=UTC")).returncode == 0
    secret = render(sets=("services.webhooks.secretsKeySecret.name=webhook-keys",
                          "services.webhooks.secretsKeySecret.key=fernet"))
    ref = env_of(_containers(_workload(secret, "webhooks", "worker"))[0])["CRM_WEBHOOK_SECRETS_KEY"]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "webhook-keys", "key": "fernet"}

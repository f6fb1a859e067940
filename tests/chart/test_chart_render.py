"""The chart lints, renders for every values file, and every manifest is valid: Kubernetes kinds
against the JSON schemas of a pinned Kubernetes (kubernetes-validate, offline), the CRD kinds
(Prometheus operator, Strimzi) against the fields their operators require."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from chartkit import CHART, KUBE_VERSION, SCHEMA_VERSION, Renderer, values_files, values_id

VALUES = pytest.mark.parametrize("values_file", values_files(), ids=values_id)

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_METADATA = {"type": "object", "required": ["name", "labels"], "properties": {"name": _NAME, "labels": _STRING_MAP}}
_SELECTOR = {"type": "object", "required": ["matchLabels"], "properties": {"matchLabels": _STRING_MAP}}
_ENDPOINT = {"type": "object", "required": ["port", "path"], "additionalProperties": False,
             "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                            "honorLabels": {"type": "boolean"}}}
_DURATION = {"type": "string", "pattern": r"^\d+(ms|s|m|h|d)$"}

# The fields of the custom resources the chart renders, as their operators read them.
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {"selector": _SELECTOR, "namespaceSelector": {"type": "object"},
                           "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT}}}}},
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "type": "object", "required": ["metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
            "properties": {"selector": _SELECTOR, "namespaceSelector": {"type": "object"},
                           "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT}}}}},
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object", "required": ["metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["groups"], "additionalProperties": False,
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "rules": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["alert", "expr", "labels", "annotations"],
                    "additionalProperties": False,
                    "properties": {"alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                   "expr": {"type": "string", "minLength": 1}, "for": _DURATION,
                                   "labels": {"type": "object", "required": ["severity"],
                                              "properties": {"severity": {"enum": ["warning", "critical"]}}},
                                   "annotations": {"type": "object", "required": ["summary", "description"],
                                                   "additionalProperties": {"type": "string"}}}}}}}}}}}},
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): {
        "type": "object", "required": ["metadata", "spec"],
        "properties": {"metadata": {**_METADATA, "properties": {
            **_METADATA["properties"],
            "labels": {**_STRING_MAP, "required": ["strimzi.io/cluster"]}}},
            "spec": {"type": "object", "required": ["topicName", "partitions", "replicas"],
                     "additionalProperties": False,
                     "properties": {"topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                                    "partitions": {"type": "integer", "minimum": 1},
                                    "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                                    "config": {"type": "object",
                                               "additionalProperties": {"type": ["string", "number", "boolean"]}}}}}},
}


@VALUES
def test_helm_lint_strict(helm: Path, values_file: Path | None) -> None:
    cmd = [str(helm), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values_file is not None:
        cmd += ["-f", str(values_file)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"helm lint --strict failed:\n{out.stdout}\n{out.stderr}"
    assert "0 chart(s) failed" in out.stdout


@VALUES
def test_every_manifest_passes_schema_validation(render: Renderer, values_file: Path | None) -> None:
    rendered = render(values_file)
    assert rendered.docs, "nothing rendered"
    errors = []
    for doc in rendered.docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd_schema = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd_schema is not None:
            validator = jsonschema.Draft202012Validator(crd_schema)
            errors += [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                       for e in validator.iter_errors(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: no Kubernetes {SCHEMA_VERSION} schema for {doc['apiVersion']} {doc['kind']}")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'/'.join(map(str, exc.absolute_path))}: {exc.message}")
    assert errors == [], f"{len(errors)} schema errors:\n" + "\n".join(errors)


def test_the_production_like_values_render_every_optional_kind(render: Renderer) -> None:
    """The production-like file switches everything on, so the validation above covers each kind."""
    kinds = {doc["kind"] for doc in render(CHART / "ci" / "production-values.yaml").docs}
    assert {"Deployment", "Service", "Job", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "Ingress", "ServiceAccount", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap",
            "KafkaTopic"} <= kinds


def test_values_schema_refuses_a_misspelt_value(render: Renderer) -> None:
    out = render.run(sets=("api.replicaz=3",))
    assert out.returncode != 0
    assert "replicaz" in out.stderr


def test_values_schema_refuses_s3_attachments_without_a_bucket(render: Renderer) -> None:
    out = render.run(sets=("attachments.store=s3",))
    assert out.returncode != 0
    assert "bucket" in out.stderr


def test_local_attachments_in_the_pod_with_several_replicas_are_refused(render: Renderer) -> None:
    """Files uploaded to one pod would be missing on the others: the chart says so instead."""
    out = render.run(sets=("attachments.persistence.enabled=false", "api.replicas=2"))
    assert out.returncode != 0
    assert "attachments.persistence.enabled" in out.stderr
    assert render.run(sets=("attachments.persistence.enabled=false", "api.replicas=1")).returncode == 0


def test_the_secret_names_are_required(render: Renderer) -> None:
    out = render.run(sets=("existingSecret=",))
    assert out.returncode != 0
    assert "existingSecret" in out.stderr

"""The live /openapi.json passes the tools the API's clients use: 0 errors from each.

* openapi-spec-validator (PyPI): the document is valid OpenAPI 3.1 (unique operationIds too);
* Redocly CLI with its ``recommended`` rules (``tools/openapi-lint/redocly.yaml``);
* Spectral with ``spectral:oas`` and the OWASP API Security ruleset
  (``tools/openapi-lint/.spectral.yaml``).

The JavaScript tools come from ``tools/openapi-lint/node_modules``, installed from its
package-lock.json by ``make install`` / ``make test``; nothing is fetched here. A rule is
switched off only in those ruleset files, with the reason beside it. A tool that cannot run
fails the test with the reason: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LINT = REPO / "tools" / "openapi-lint"
INSTALL_HINT = "run `make install` (it installs tools/openapi-lint from its package-lock.json with npm ci)"


@pytest.fixture(scope="module")
def live_document(platform, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    r = requests.get(f"{platform.gateway_url}/openapi.json", timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc.get("x-missing-services") == [], f"the document misses services: {doc.get('x-missing-services')}"
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(doc))
    return doc, path


def _node_tool(name: str) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed, so {name} cannot run: install Node.js 20+ and npm, then {INSTALL_HINT}",
                    pytrace=False)
    script = LINT / "node_modules" / ".bin" / name
    if not script.exists():
        pytest.fail(f"{script} is missing: {INSTALL_HINT}", pytrace=False)
    return [str(script)]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    # No telemetry, no update check: the linters talk to nothing.
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true", "NO_COLOR": "1",
           "DO_NOT_TRACK": "1"}
    return subprocess.run(command, cwd=LINT, env=env, capture_output=True, text=True, timeout=600)


def test_openapi_spec_validator_accepts_the_document(live_document):
    from openapi_spec_validator import OpenAPIV31SpecValidator

    doc, _ = live_document
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == [], f"{len(errors)} errors from openapi-spec-validator:\n" + "\n".join(errors[:50])


def test_redocly_recommended_has_no_errors(live_document):
    _, path = live_document
    done = _run([*_node_tool("redocly"), "lint", "--config", str(LINT / "redocly.yaml"), "--format", "json",
                 str(path)])
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"redocly did not run (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    shown = [f"{p['ruleId']}: {p['message']} at {[loc.get('pointer') for loc in p.get('location', [])]}"
             for p in errors[:50]]
    assert report["totals"]["errors"] == 0 and not errors, f"{len(errors)} Redocly errors:\n" + "\n".join(shown)


def _spectral(path: Path) -> list[dict[str, Any]]:
    done = _run([*_node_tool("spectral"), "lint", "--ruleset", str(LINT / ".spectral.yaml"), "--format", "json",
                 "--quiet", str(path)])
    try:
        results = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        results = None
    # Exit 1 means "found errors" only when it printed them; anything else is a tool that did not run.
    if results is None or done.returncode not in (0, 1) or (done.returncode == 1 and not results):
        pytest.fail(f"spectral did not run (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False)
    return list(results)


def test_spectral_oas_and_owasp_have_no_errors(live_document):
    _, path = live_document
    errors = [r for r in _spectral(path) if r["severity"] == 0]
    shown = [f"{r['code']}: {r['message']} at {'/'.join(map(str, r['path']))}" for r in errors[:50]]
    assert errors == [], f"{len(errors)} Spectral errors:\n" + "\n".join(shown)


def test_the_spectral_ruleset_really_has_the_owasp_rules(tmp_path):
    """A wrong path in .spectral.yaml must not turn into a silent spectral:oas-only run."""
    probe = {"openapi": "3.1.0", "info": {"title": "probe", "version": "1"}, "paths": {"/things": {"get": {
        "operationId": "listThings", "responses": {"200": {"description": "ok", "content": {"application/json": {
            "schema": {"type": "integer"}}}}}}}}}
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(probe))
    codes = {r["code"] for r in _spectral(path)}
    assert "owasp:api4:2023-integer-format" in codes, codes

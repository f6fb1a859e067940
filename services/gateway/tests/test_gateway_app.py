"""The app as a whole: CORS, the service entry point, and `crm-service gateway api` for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from gateway_helpers import PROBLEM, SECRET, auth

from crm_devstack.ports import free_port
from crm_kit.service import find_service
from crm_kit.settings import SERVICES


def test_cors_preflight_and_exposed_headers(make_gateway, echo):
    c = make_gateway(echo.url, CRM_CORS_ORIGINS="https://app.example, https://admin.example").test_client()
    r = c.options("/v1/leads", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert echo.hits == []
    r = c.get("/v1/leads?_headers=1", headers={**auth(), "Origin": "https://admin.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://admin.example"
    assert "ETag" in r.headers["Access-Control-Expose-Headers"]
    assert "Origin" in r.headers["Vary"]
    r = c.get("/v1/leads", headers={**auth(), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    # errors carry CORS headers too, so a browser can read them
    r = c.get("/v1/leads", headers={"Origin": "https://app.example"})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_cors_off_by_default(client):
    r = client.options("/v1/leads", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_service_entry_point():
    spec = find_service("gateway")
    assert spec.name == "gateway" and spec.role == "gateway"
    assert spec.migrations is None and spec.run_worker is None
    from crm_gateway.app import create_app

    assert spec.build_app is create_app


def test_missing_settings_fail_at_start():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env["CRM_JWT_SECRET"] = SECRET
    out = subprocess.run([sys.executable, "-m", "crm_kit.cli", "gateway", "api"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    for name in SERVICES:
        assert f"CRM_{name.upper()}_URL is required" in out.stderr


def test_crm_service_gateway_api_runs_for_real(closed_port):
    """`crm-service gateway api` under gunicorn, every service down."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"CRM_JWT_SECRET": SECRET, "CRM_LOG_FORMAT": "text", "CRM_UPSTREAM_RETRIES": "1",
                **{f"CRM_{name.upper()}_URL": closed_port.url for name in SERVICES}})
    command = Path(sys.executable).with_name("crm-service")
    if not command.exists():
        pytest.fail("crm-service is not installed in this environment (make install)")
    proc = subprocess.Popen([str(command), "gateway", "api", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or its worker still booting
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.2)
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 503
        me = requests.get(f"{base}/v1/me", headers=auth(["viewer"]), timeout=5)
        assert me.status_code == 200 and me.json()["roles"] == ["viewer"]
        r = requests.get(f"{base}/v1/leads", timeout=5)
        assert r.status_code == 401 and r.headers["Content-Type"] == PROBLEM
        r = requests.get(f"{base}/v1/leads", headers=auth(), timeout=10)
        assert r.status_code == 503 and r.headers["Content-Type"] == PROBLEM and "Retry-After" in r.headers
        assert requests.get(f"{base}/docs", timeout=5).status_code == 200
        assert "crm_gateway_upstream_requests_total" in requests.get(f"{base}/metrics", timeout=5).text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

"""A service's worker never loads the web stack: its rules raise domain errors (no HTTP), and
loading the service to build its worker plan imports no route module and no Flask."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from crm_kit.settings import SERVICES

_PROBE = """
import json, sys
from crm_kit.service import find_service
from crm_kit.settings import load_settings
name, scratch = sys.argv[1], sys.argv[2]
settings = load_settings("domain", {
    "CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": f"sqlite:///{scratch}/db.sqlite3",
    "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": "x" * 40, "CRM_LOG_FORMAT": "text",
    "CRM_WEBHOOK_SECRETS_KEY": "only-to-build-the-plan",
    "CRM_ATTACHMENTS_DIR": f"{scratch}/files"})
plan = find_service(name).worker_plan(settings)
web = ("flask", "werkzeug", "crm_kit.web.api", "crm_kit.web.app")
print(json.dumps({"consumers": [c.name for c in plan.consumers],
                  "web": sorted(m for m in sys.modules
                                if m in web or m.startswith("crm") and m.endswith(("_routes", ".api")))}))
"""


@pytest.mark.parametrize("name", SERVICES)
def test_building_a_worker_loads_no_web_module(name, tmp_path):
    out = subprocess.run([sys.executable, "-c", _PROBE, name, str(tmp_path)], capture_output=True, text=True,
                         check=True, timeout=120)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["consumers"], f"{name}'s worker plan has no consumer"
    assert found["web"] == [], f"{name}'s worker loads the web edge: {found['web']}"

"""What every process of the platform pays for: no api and no worker loads alembic (the migrations'
library, 8 MB a process) or fpdf (the PDF library, 40 MB; the render children load it), so the
local platform stays small (issue 19, "Memory"). A subprocess per service and role."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from crm_kit.settings import SERVICES

pytestmark = pytest.mark.integration

NOT_LOADED = ("alembic", "fpdf")

_PROBE = """
import json, os, sys
from crm_kit.service import find_service
from crm_kit.settings import load_settings
name, role, scratch = sys.argv[1], sys.argv[2], sys.argv[3]
env = {"CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": f"sqlite:///{scratch}/db.sqlite3",
       "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": "x" * 40, "CRM_LOG_FORMAT": "text",
       "CRM_ATTACHMENTS_DIR": f"{scratch}/files", "CRM_CONSOLE_SECRET_KEY": "x" * 40, "CRM_WEBHOOK_SECRETS_KEY": "x",
       "CRM_GATEWAY_URL": "http://127.0.0.1:9", "CRM_CONSOLE_URL": "http://127.0.0.1:9",
       **{f"CRM_{s.upper()}_URL": "http://127.0.0.1:9" for s in sys.argv[4].split(",")}}
os.environ.update(env)
spec = find_service(name)
settings = load_settings(spec.role, env)
if role == "api":
    spec.build_app(settings)
else:
    spec.worker_plan(settings)
    import crm_kafka.worker  # what run_worker runs
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("name,role", [(name, role) for name in SERVICES for role in ("api", "worker")]
                         + [("gateway", "api"), ("console", "api")])
def test_a_process_loads_neither_the_migrations_nor_the_pdf_library(name, role, tmp_path):
    out = subprocess.run([sys.executable, "-c", _PROBE, name, role, str(tmp_path), ",".join(SERVICES)],
                         capture_output=True, text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(NOT_LOADED), f"{name}'s {role} loads {sorted(loaded & set(NOT_LOADED))}"

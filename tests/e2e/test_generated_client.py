"""A Python client generated from the live /openapi.json works against the platform.

openapi-python-client (PyPI) generates the client into a temporary folder with no warning (a
warning means it left something out: an operation, a response, a model), the test imports it
and drives the conversion story through the gateway with it: create a company, a lead of that
company, link a new contact (signing authority) and a new job order to the lead, convert the
lead, and read the opportunity's contacts and job orders - every body parsed by the generated
models, every call a generated function.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e

PACKAGE = "crm_generated_client"


@pytest.fixture(scope="module")
def generated(platform, tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("generated")
    doc = root / "openapi.json"
    r = requests.get(f"{platform.gateway_url}/openapi.json", timeout=30)
    assert r.status_code == 200, r.text
    doc.write_bytes(r.content)
    bin_dir = Path(sys.executable).parent
    tool = bin_dir / "openapi-python-client"
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run `make install` (requirements-dev.txt has openapi-python-client)",
                    pytrace=False)
    # Its post-generation hook formats the code with ruff, from the same virtualenv.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    done = subprocess.run([str(tool), "generate", "--path", str(doc), "--meta", "none",
                           "--output-path", str(root / PACKAGE)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"openapi-python-client failed (exit {done.returncode}):\n{out[-5000:]}"
    assert "warning" not in out.lower(), f"openapi-python-client warned (something was left out):\n{out[-8000:]}"
    assert "not in PATH" not in out, out
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _ok(response: Any, status: int) -> Any:
    assert response.status_code == status, (response.status_code, response.content[:2000])
    assert response.parsed is not None, "the generated client could not parse the answer"
    return response.parsed


def test_the_conversion_story_with_the_generated_client(platform, generated):
    client = generated.AuthenticatedClient(base_url=platform.gateway_url, token=platform.token(("admin",)),
                                           timeout=30.0, raise_on_unexpected_status=True)
    models = _api("models")
    tag = uuid.uuid4().hex[:8]
    with client as c:
        company = _ok(_api("api.files.create_company").sync_detailed(
            client=c, body=models.CompanyIn(name=f"Generated client {tag}")), 201)
        lead = _ok(_api("api.leads.create_lead").sync_detailed(
            client=c, body=models.LeadCreate(title=f"Generated lead {tag}", company_id=company.id)), 201)
        assert isinstance(lead, models.Lead) and lead.company_id == company.id

        roles = _ok(_api("api.catalogue.list_lead_table_entries").sync_detailed(
            models.ListLeadTableEntriesTable("roles"), client=c, page_size=200), 200)
        sign = next(entry for entry in roles.items if entry.code == "SIGN")
        link = _ok(_api("api.leads.create_lead_contact").sync_detailed(lead.id, client=c, body=models.ContactLinkIn(
            role_id=sign.id, contact=models.NewContactIn(first_name="Gene", last_name=f"Rated {tag}",
                                                         company_id=company.id))), 201)
        job = _ok(_api("api.leads.create_lead_job_order").sync_detailed(lead.id, client=c, body=models.JobOrderLinkIn(
            job_order=models.NewJobOrderIn(title=f"Generated job {tag}", company_id=company.id))), 201)

        converted = _ok(_api("api.leads.convert_lead").sync_detailed(lead.id, client=c, body=models.LeadConversion()),
                        201)
        assert isinstance(converted, models.LeadConverted)
        # The opportunity is a free-form object in the conversion's answer: read it with the generated getter.
        opportunity = _ok(_api("api.opportunities.get_opportunity").sync_detailed(
            converted.lead.converted_opportunity_id, client=c), 200)
        assert converted.opportunity["id"] == opportunity.id
        assert opportunity.lead_id == lead.id and opportunity.company_id == company.id

        contacts = _ok(_api("api.opportunities.list_opportunity_contacts").sync_detailed(opportunity.id, client=c), 200)
        assert [(item.contact_id, item.role.code) for item in contacts.items] == [(link.contact_id, "SIGN")]
        jobs = _ok(_api("api.opportunities.list_opportunity_job_orders").sync_detailed(opportunity.id, client=c), 200)
        assert [item.job_order_id for item in jobs.items] == [job.job_order_id]
        assert opportunity.version >= 1 and opportunity.stage is not None

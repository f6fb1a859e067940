"""Issue 17's import, API side, through the gateway: companies and contacts in bulk, then leads in
bulk naming them - the order an import of several files takes - each call's consistency token
covering the next one's reference checks; then the same files again create nothing.
"""

from __future__ import annotations

import uuid

import pytest
from test_records_gateway import Client

pytestmark = pytest.mark.e2e
TOKEN = "Consistency-Token"


def _bulk(client: Client, path: str, items: list[dict], token: str | None) -> tuple[list[dict], str | None]:
    r = client("POST", path, json={"action": "create", "items": items}, headers={TOKEN: token} if token else {})
    assert r.status_code == 200, r.text
    return r.json()["results"], r.headers.get(TOKEN) or token


def test_an_import_of_companies_contacts_and_leads_and_its_rerun(platform):
    marketer = Client(platform, roles=("marketing",), user=f"importer-{uuid.uuid4().hex[:6]}", office="import-office")
    run = uuid.uuid4().hex[:8]
    companies = [{"key": f"{run}:c{i}", "name": f"Import {run} company {i}"} for i in range(5)]
    contacts = [{"key": f"{run}:p{i}", "first_name": "Imp", "last_name": f"{run}-{i}"} for i in range(5)]

    def leads_of(made_companies: list[dict], made_contacts: list[dict]) -> list[dict]:
        rows = [{"key": f"{run}:l{i}", "title": f"Import {run} lead {i}", "company_id": made_companies[i % 5]["id"],
                 "contact_id": made_contacts[i % 5]["id"]} for i in range(40)]
        rows[13] = {"key": f"{run}:l13", "title": "no such company", "company_id": str(uuid.uuid4())}
        return rows

    token = None
    made_companies, token = _bulk(marketer, "/v1/companies/bulk", companies, token)
    contacts = [{**c, "company_id": made_companies[i]["id"]} for i, c in enumerate(contacts)]
    made_contacts, token = _bulk(marketer, "/v1/contacts/bulk", contacts, token)
    assert {r["status"] for r in made_companies + made_contacts} == {"created"}
    # The leads service learns of the new files from Kafka: the token makes it wait for them.
    leads, token = _bulk(marketer, "/v1/leads/bulk", leads_of(made_companies, made_contacts), token)
    assert [r["status"] for r in leads] == ["error" if i == 13 else "created" for i in range(40)], leads
    assert leads[13]["errors"][0]["field"] == "company_id"
    lead = marketer("GET", f"/v1/leads/{leads[0]['id']}", headers={TOKEN: token}).json()
    assert (lead["company_id"], lead["contact_id"], lead["office_id"]) \
        == (made_companies[0]["id"], made_contacts[0]["id"], "import-office")
    # The lead's contacts tab (linking, from the lead's event) shows its main contact.
    tab = marketer("GET", f"/v1/leads/{leads[0]['id']}/contacts", headers={TOKEN: token}).json()["items"]
    assert [c["contact_id"] for c in tab] == [made_contacts[0]["id"]]

    # The same files again, without any token: nothing is created twice.
    again_companies, _ = _bulk(marketer, "/v1/companies/bulk", companies, None)
    again_contacts, _ = _bulk(marketer, "/v1/contacts/bulk", contacts, None)
    again_leads, _ = _bulk(marketer, "/v1/leads/bulk", leads_of(made_companies, made_contacts), None)
    assert [(r["status"], r["id"]) for r in again_companies] == [("exists", r["id"]) for r in made_companies]
    assert [(r["status"], r["id"]) for r in again_contacts] == [("exists", r["id"]) for r in made_contacts]
    assert [r["status"] for r in again_leads] == ["error" if i == 13 else "exists" for i in range(40)]
    assert [r["id"] for r in again_leads] == [r["id"] for r in leads]
    listed = marketer("GET", "/v1/leads", params={"q": f"Import {run}", "page_size": 100}).json()["items"]
    assert len(listed) == 39
    # Permissions: a viewer may not import.
    viewer = Client(platform, roles=("viewer",))
    r = viewer("POST", "/v1/companies/bulk", json={"action": "create", "items": companies})
    assert r.status_code == 403

"""Issue 17 (import, server side): CSV imports of companies and contacts in the linking service's
own app, with its worker's import loop run in-process, on SQLite and PostgreSQL: the same module
as the records' imports (``crm_kit.imports``) over linking's own bulk create of files."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from test_linking_files import Env, auth, env  # noqa: F401 - the fixture

from crm_linking.service import IMPORTS
from crm_linking.tables import companies, contacts

pytestmark = pytest.mark.integration


def _call(env: Env, method: str, path: str, expect: int = 200, headers: dict[str, str] | None = None,  # noqa: F811
          **kw: Any) -> Any:
    r = env.client.open(path, method=method, headers=headers or auth(), **kw)
    assert r.status_code == expect, (r.status_code, r.get_data(as_text=True)[:1000])
    return r


def _import(env: Env, collection: str, columns: list[str], rows: list[list[str]], mapping: dict[str, str],  # noqa: F811
            key_column: str | None = None) -> dict[str, Any]:
    """Upload, map, check, start and run an import to the end; the job as it ends."""
    runner = IMPORTS.runner(env.db)
    base = f"/v1/{collection}/imports"
    job = _call(env, "POST", base, 201, json={"file_name": f"{collection}.csv", "columns": columns,
                                               "rows": rows}).json
    _call(env, "PUT", f"{base}/{job['id']}/mapping", json={"mapping": mapping, "key_column": key_column})
    runner.drain()
    checked = _call(env, "GET", f"{base}/{job['id']}").json
    assert checked["status"] == "checked", checked
    _call(env, "POST", f"{base}/{job['id']}/start", 202)
    runner.drain()
    done = _call(env, "GET", f"{base}/{job['id']}").json
    assert done["status"] == "done", done
    done["rows_out"] = _call(env, "GET", f"{base}/{job['id']}/rows", query_string={"page_size": 200}).json["items"]
    done["checked_job"] = checked
    return dict(done)


def test_companies_then_their_contacts_and_the_same_files_again(env: Env) -> None:  # noqa: F811
    run = uuid.uuid4().hex[:6]
    rows = [[f"{run}-c{i}", f"Company {i}", "Utrecht", ""] for i in range(700)]
    rows[3][3] = "ftp://nope"
    rows[4][1] = " "
    mapping = {"Name": "name", "City": "city", "Site": "website"}
    before = env.count(companies)
    events = len(env.events("linking.company.created"))
    job = _import(env, "companies", ["Ref", "Name", "City", "Site"], rows, mapping, key_column="Ref")
    assert (job["checked_job"]["valid"], job["checked_job"]["invalid"]) == (698, 2)
    assert (job["created"], job["existing"], job["failed"]) == (698, 0, 2)
    assert env.count(companies) == before + 698
    assert len(env.events("linking.company.created")) == events + 698  # none from the check
    by_line = {r["number"]: r for r in job["rows_out"]}
    assert by_line[5]["errors"][0]["field"] == "website" and by_line[6]["errors"][0]["field"] == "name"
    company_ids = [by_line[n]["id"] for n in (2, 3, 4)]

    people = [[f"Ann{i}", f"P{i}", company_ids[i % 3], f"ann{i}@example.com"] for i in range(20)]
    people[7][2] = str(uuid.uuid4())
    job = _import(env, "contacts", ["First", "Last", "Company", "Email"], people,
                  {"First": "first_name", "Last": "last_name", "Company": "company_id", "Email": "email"})
    assert (job["created"], job["failed"]) == (19, 1)
    failed = [r for r in job["rows_out"] if r["status"] == "error"]
    assert [r["number"] for r in failed] == [9] and failed[0]["errors"][0]["field"] == "company_id"
    contact = _call(env, "GET", f"/v1/contacts/{job['rows_out'][0]['id']}").json
    assert (contact["first_name"], contact["company_id"], contact["email"]) \
        == ("Ann0", company_ids[0], "ann0@example.com")

    # The same files again: nothing new (the key column, and the digest keys of the contacts).
    count = env.count(companies), env.count(contacts)
    again = _import(env, "companies", ["Ref", "Name", "City", "Site"], rows, mapping, key_column="Ref")
    assert (again["created"], again["existing"], again["failed"]) == (0, 698, 2)
    again = _import(env, "contacts", ["First", "Last", "Company", "Email"], people,
                    {"First": "first_name", "Last": "last_name", "Company": "company_id", "Email": "email"})
    assert (again["created"], again["existing"]) == (0, 19)
    assert (env.count(companies), env.count(contacts)) == count


def test_only_the_creator_sees_a_job_and_files_edit_is_needed(env: Env) -> None:  # noqa: F811
    job = _call(env, "POST", "/v1/companies/imports", 201, json={"file_name": "c.csv", "columns": ["Name"],
                                                                  "rows": [["Acme"]]}).json
    for path in (f"/v1/companies/imports/{job['id']}", f"/v1/companies/imports/{job['id']}/result"):
        _call(env, "GET", path, 404, headers=auth(user="u2"))
    _call(env, "GET", f"/v1/contacts/imports/{job['id']}", 404)  # a companies job is no contacts job
    _call(env, "GET", "/v1/companies/imports", 403, headers=auth(("viewer",)))
    assert _call(env, "GET", "/v1/companies/imports").json["items"][0]["id"] == job["id"]

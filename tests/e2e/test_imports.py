"""Issue 17's import, server side, through the gateway on the live platform: CSV rows uploaded,
mapped, checked and created by the owning service's worker, which is SIGKILLed while it creates
them and restarted; the import ends ``done`` with every row made exactly once. Then the same file
again creates nothing.

The test waits only for the worker (it polls the job's status with a deadline); it never sleeps
to wait for its own writes.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e
TIMEOUT = 60  # one request on a loaded box
CHUNK = 5_000  # rows per upload call (the contract's maximum)


class Importer:
    """One person importing through the gateway (a session: its consistency cookie goes along)."""

    def __init__(self, platform: Any, roles: tuple[str, ...], user: str, office: str) -> None:
        self.base = platform.gateway_url
        self.http = requests.Session()
        self.http.headers.update(platform.auth(roles, user=user, office=office))

    def __call__(self, method: str, path: str, expect: int = 200, **kw: Any) -> requests.Response:
        r = self.http.request(method, self.base + path, timeout=TIMEOUT, **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:1000]}"
        return r

    def upload(self, collection: str, columns: list[str], rows: list[list[str]]) -> str:
        first, rest = rows[:CHUNK], rows[CHUNK:]
        job = self("POST", f"/v1/{collection}/imports", 201,
                   json={"file_name": f"{collection}.csv", "columns": columns, "rows": first}).json()
        for start in range(0, len(rest), CHUNK):
            self("POST", f"/v1/{collection}/imports/{job['id']}/rows", json={"rows": rest[start:start + CHUNK]})
        assert self("GET", f"/v1/{collection}/imports/{job['id']}").json()["rows"] == len(rows)
        return str(job["id"])

    def job(self, collection: str, job_id: str) -> dict[str, Any]:
        return dict(self("GET", f"/v1/{collection}/imports/{job_id}").json())

    def until(self, collection: str, job_id: str, done: Callable[[dict[str, Any]], bool],
              timeout: float = 600, every: float = 0.2) -> dict[str, Any]:
        """Poll the job until ``done(job)`` (waiting for the worker), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(collection, job_id)
            if done(job):
                return job
            assert time.monotonic() < deadline, f"the import did not get there within {timeout} s: {job}"
            time.sleep(every)

    def check(self, collection: str, job_id: str, mapping: dict[str, str], key_column: str | None = None
              ) -> dict[str, Any]:
        self("PUT", f"/v1/{collection}/imports/{job_id}/mapping", json={"mapping": mapping,
                                                                         "key_column": key_column})
        return self.until(collection, job_id, lambda j: j["status"] == "checked")

    def result(self, collection: str, job_id: str) -> list[dict[str, str]]:
        r = self("GET", f"/v1/{collection}/imports/{job_id}/result")
        assert r.headers["Content-Type"].startswith("text/csv")
        return list(csv.DictReader(io.StringIO(r.text)))

    def run_with_a_killed_worker(self, platform: Any, collection: str, job_id: str, worker: str
                                 ) -> tuple[dict[str, Any], dict[str, Any], float]:
        """Start the import, SIGKILL ``worker`` once it has made some rows, restart it; the job at the
        kill, the job done, and the seconds from start to done."""
        began = time.monotonic()
        assert self("POST", f"/v1/{collection}/imports/{job_id}/start", 202).json()["status"] == "running"
        self.until(collection, job_id, lambda j: j["processed"] > 0, every=0.02)
        platform.processes.kill(worker)
        try:
            at_kill = self.job(collection, job_id)
        finally:
            platform.processes.restart(worker)
        done = self.until(collection, job_id, lambda j: j["status"] == "done")
        return at_kill, done, time.monotonic() - began


def _settle(platform: Any, timeout: float = 600) -> None:
    """Wait until the services that read the imported records' events (linking, opportunities and
    triggers read the leads'; leads and opportunities read linking's) have caught up with them, so
    the tests after this one get no 503 for the backlog. A lead and a company made now (each without
    any earlier token) carry tokens covering every event of their service before them; a read with
    such a token answers 503 until the service read has applied them all (waiting for the workers)."""
    auth = platform.auth(("admin",), user=f"imp-settle-{uuid.uuid4().hex[:6]}", office="imp-settle")

    def call(method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {**auth, **({"Consistency-Token": token} if token else {})}
        return requests.request(method, platform.gateway_url + path, headers=headers, timeout=TIMEOUT, **kw)

    lead = call("POST", "/v1/leads", json={"title": "import settle"})
    company = call("POST", "/v1/companies", json={"name": "import settle"})
    assert (lead.status_code, company.status_code) == (201, 201), (lead.text, company.text)
    lead_id, company_id = lead.json()["id"], company.json()["id"]
    deadline = time.monotonic() + timeout
    for path, token in ((f"/v1/leads/{lead_id}/contacts", lead.headers["Consistency-Token"]),
                        ("/v1/opportunities?page_size=1", lead.headers["Consistency-Token"]),
                        (f"/v1/trigger-executions?record_id={lead_id}", lead.headers["Consistency-Token"]),
                        ("/v1/leads?page_size=1", company.headers["Consistency-Token"]),
                        ("/v1/opportunities?page_size=1", company.headers["Consistency-Token"])):
        while True:
            r = call("GET", path, token)
            if r.status_code != 503:
                assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
                break
            assert time.monotonic() < deadline, f"GET {path} still 503 after {timeout} s: {r.text[:300]}"
            time.sleep(float(r.headers.get("Retry-After", "1")))
    call("DELETE", f"/v1/leads/{lead_id}")
    call("DELETE", f"/v1/companies/{company_id}")


def _listed(who: Importer, path: str, q: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = None
    while True:
        body = who("GET", path, params={"q": q, "page_size": 200, **({"page_token": token} if token else {})}).json()
        out += body["items"]
        token = body["next_page_token"]
        if not token:
            return out


@pytest.mark.timeout(1500)
def test_ten_thousand_leads_with_a_killed_leads_worker_are_made_exactly_once(platform):
    tag = uuid.uuid4().hex[:10]
    marketer = Importer(platform, ("marketing",), f"imp-{tag}", f"imp-office-{tag}")
    rows = [[f"imp{tag} lead {i:05d}", f"Imported from leads.csv, line {i + 2}"] for i in range(10_000)]
    job_id = marketer.upload("leads", ["Title", "Notes"], rows)
    began = time.monotonic()
    checked = marketer.check("leads", job_id, {"Title": "title", "Notes": "description"})
    check_seconds = time.monotonic() - began
    assert (checked["valid"], checked["invalid"]) == (10_000, 0), checked
    assert _listed(marketer, "/v1/leads", f"imp{tag}") == []  # the check wrote nothing

    at_kill, done, seconds = marketer.run_with_a_killed_worker(platform, "leads", job_id, "leads-worker")
    assert at_kill["status"] == "running" and 0 < at_kill["processed"] < 10_000, at_kill
    assert (done["processed"], done["created"], done["existing"], done["failed"]) == (10_000, 10_000, 0, 0), done
    print(f"\nimport of 10,000 leads: checked in {check_seconds:.1f} s ({10_000 / check_seconds:.0f} rows/s), "
          f"created in {seconds:.1f} s ({10_000 / seconds:.0f} rows/s) with the leads worker killed after "
          f"{at_kill['processed']} rows and restarted")

    leads = _listed(marketer, "/v1/leads", f"imp{tag}")
    titles = sorted(lead["title"] for lead in leads)
    assert len(leads) == 10_000 and titles == sorted(r[0] for r in rows)  # exactly once each
    result = marketer.result("leads", job_id)
    assert len(result) == 10_000 and {r["status"] for r in result} == {"created"}
    assert sorted(r["id"] for r in result) == sorted(lead["id"] for lead in leads)

    # The same file again (its first 2,000 rows): every row exists, with the same id; nothing is made.
    again = marketer.upload("leads", ["Title", "Notes"], rows[:2_000])
    marketer.check("leads", again, {"Title": "title", "Notes": "description"})
    marketer("POST", f"/v1/leads/imports/{again}/start", 202)
    rerun = marketer.until("leads", again, lambda j: j["status"] == "done")
    assert (rerun["created"], rerun["existing"], rerun["failed"]) == (0, 2_000, 0), rerun
    assert [r["id"] for r in marketer.result("leads", again)] == [r["id"] for r in result[:2_000]]
    assert len(_listed(marketer, "/v1/leads", f"imp{tag}")) == 10_000
    # Someone else - even of the same office - does not see the job.
    other = Importer(platform, ("marketing",), f"imp-other-{tag}", f"imp-office-{tag}")
    other("GET", f"/v1/leads/imports/{job_id}", 404)
    assert job_id not in [j["id"] for j in other("GET", "/v1/leads/imports").json()["items"]]
    _settle(platform)


@pytest.mark.timeout(900)
def test_companies_then_their_contacts_with_a_killed_linking_worker(platform):
    tag = uuid.uuid4().hex[:10]
    marketer = Importer(platform, ("marketing",), f"imp-{tag}", f"imp-office-{tag}")
    companies = [[f"C-{i}", f"imp{tag} company {i:04d}", "Utrecht"] for i in range(2_000)]
    companies[7][1] = ""  # no name: invalid, and an error when run
    job_id = marketer.upload("companies", ["Ref", "Name", "City"], companies)
    checked = marketer.check("companies", job_id, {"Name": "name", "City": "city"}, key_column="Ref")
    assert (checked["valid"], checked["invalid"]) == (1_999, 1), checked
    bad = marketer("GET", f"/v1/companies/imports/{job_id}/rows", params={"status": "invalid"}).json()["items"]
    assert [(r["number"], r["errors"][0]["field"]) for r in bad] == [(9, "name")]

    at_kill, done, seconds = marketer.run_with_a_killed_worker(platform, "companies", job_id, "linking-worker")
    assert at_kill["status"] == "running" and at_kill["processed"] < 2_000, at_kill
    assert (done["created"], done["existing"], done["failed"]) == (1_999, 0, 1), done
    print(f"\nimport of 2,000 companies: {seconds:.1f} s ({2_000 / seconds:.0f} rows/s), linking worker killed after "
          f"{at_kill['processed']} rows")
    made = _listed(marketer, "/v1/companies", f"imp{tag}")
    assert len(made) == 1_999 and len({c["name"] for c in made}) == 1_999
    ids = {r["row"]: r["id"] for r in marketer.result("companies", job_id)}

    # Contacts naming those companies by id (from the result file), one naming none that exists.
    people = [[f"Ann {i}", f"imp{tag} person {i}", ids[str(2 + i * 3)] if i != 5 else str(uuid.uuid4()),
               "ann; ignored"] for i in range(300)]
    contacts = marketer.upload("contacts", ["First", "Last", "Company", "Note"], people)
    marketer.check("contacts", contacts, {"First": "first_name", "Last": "last_name", "Company": "company_id"})
    marketer("POST", f"/v1/contacts/imports/{contacts}/start", 202)
    done = marketer.until("contacts", contacts, lambda j: j["status"] == "done")
    assert (done["created"], done["failed"]) == (299, 1), done
    person = marketer("GET", f"/v1/contacts/{marketer.result('contacts', contacts)[0]['id']}").json()
    assert (person["first_name"], person["company_id"]) == ("Ann 0", ids["2"])

    # The companies file again: nothing is made twice.
    again = marketer.upload("companies", ["Ref", "Name", "City"], companies)
    marketer.check("companies", again, {"Name": "name", "City": "city"}, key_column="Ref")
    marketer("POST", f"/v1/companies/imports/{again}/start", 202)
    rerun = marketer.until("companies", again, lambda j: j["status"] == "done")
    assert (rerun["created"], rerun["existing"], rerun["failed"]) == (0, 1_999, 1), rerun
    assert len(_listed(marketer, "/v1/companies", f"imp{tag}")) == 1_999
    _settle(platform)

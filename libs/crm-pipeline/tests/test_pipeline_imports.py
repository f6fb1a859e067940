"""Issue 17 (import, server side): CSV imports of leads and opportunities in the records services'
own apps, with the worker's import loop run in-process, on SQLite and PostgreSQL.

The routes only change the job; ``ImportRunner.drain`` does what the worker's loop does (one
batch a transaction) until nothing is left. Covered: the mapping rules (unknown column or field,
a field twice, a required field missing), cells -> items (empty cells left out, ``;`` lists,
numbers, decimals, dates), keys (the key column or a digest; identical rows stay distinct), the
check phase writing nothing but the rows' results, the run's results and counters, a re-run
creating nothing, cancel, the creator-only visibility, the permission, and the limits.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from test_pipeline_references import SECRET, auth, services  # noqa: F401 - the fixture

from crm_kafka.outbox import OUTBOX
from crm_kit.imports import ImportRunner, Imports
from crm_kit.imports.jobs import row_key
from crm_pipeline.bulk import importer

pytestmark = pytest.mark.integration
KINDS = ["leads", "opportunities"]
assert SECRET


class Job:
    """One service's imports, as a client and the worker see them."""

    def __init__(self, svc: Any, headers: dict[str, str] | None = None) -> None:
        self.svc = svc
        self.headers = headers or auth()
        from crm_kit.service import find_service
        metadata = find_service(svc.name).metadata
        assert metadata is not None
        imports = Imports(metadata.tables["import_jobs"], metadata.tables["import_rows"],
                          [importer(svc.kind, svc.tables)])
        self.runner = ImportRunner(svc.db, imports)
        self.base = f"{svc.base}/imports"

    def call(self, method: str, path: str = "", expect: int = 200, headers: dict[str, str] | None = None,
             **kw: Any) -> Any:
        r = self.svc.client.open(self.base + path, method=method, headers=headers or self.headers, **kw)
        assert r.status_code == expect, (r.status_code, r.get_data(as_text=True)[:2000])
        return r

    def upload(self, columns: list[str], rows: list[list[str]], **kw: Any) -> dict[str, Any]:
        return dict(self.call("POST", "", 201, json={"file_name": "people.csv", "columns": columns, "rows": rows},
                              **kw).json)

    def map(self, job_id: str, mapping: dict[str, str], key_column: str | None = None,
            expect: int = 200) -> Any:
        return self.call("PUT", f"/{job_id}/mapping", expect, json={"mapping": mapping, "key_column": key_column})

    def get(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/{job_id}").json)

    def rows(self, job_id: str, status: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        while True:
            query: dict[str, Any] = {"page_size": 200, **({"status": status} if status else {}),
                                     **({"page_token": token} if token else {})}
            body = self.call("GET", f"/{job_id}/rows", query_string=query).json
            out += body["items"]
            token = body["next_page_token"]
            if not token:
                return out

    def result(self, job_id: str) -> list[dict[str, str]]:
        r = self.call("GET", f"/{job_id}/result")
        assert r.mimetype == "text/csv"
        return list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))


def _count(svc: Any) -> int:
    with svc.db.transaction() as s:
        return int(s.execute(select(func.count()).select_from(svc.tables["records"])).scalar_one())


def _events(svc: Any) -> int:
    with svc.db.transaction() as s:
        return int(s.execute(select(func.count()).select_from(OUTBOX)).scalar_one())


@pytest.mark.parametrize("name", KINDS)
def test_a_thousand_rows_with_three_bad_ones_checked_run_and_run_again(services, name):  # noqa: F811
    svc = services(name)
    svc.seed(svc.kind.kind)
    company = svc.file("company")
    group, other_group = svc.put(svc.kind.kind, "groups", "HOT"), svc.put(svc.kind.kind, "groups", "COLD")
    run = uuid.uuid4().hex[:8]
    columns = ["Title", "Notes", "Company", "Groups", "Ignored"]
    if svc.kind.money:
        columns += ["Amount", "Currency", "Probability", "Close"]
    rows = []
    for i in range(1000):
        row = [f"{run} {i}", f"line one\nline two {i}", company if i % 2 else "", f"{group}; {other_group}",
               "whatever"]
        if svc.kind.money:
            row += ["1250.50", "EUR", "40", "2027-01-31"]
        rows.append(row)
    rows[4][0] = "   "  # blank title
    rows[500][2] = str(uuid.uuid4())  # unknown company
    rows[998][3] = "not-a-group-id-at-all-but-too-long-" + "x" * 40  # longer than an id
    job = Job(svc)
    made = job.upload(columns, rows[:600])
    assert (made["status"], made["rows"], len(made["sample"])) == ("uploading", 600, 10)
    assert made["sample"][0]["number"] == 2 and made["sample"][0]["status"] == "pending"
    fields = {f["name"]: f for f in made["fields"]}
    assert fields["title"]["required"] and fields["group_ids"]["many"] and "key" not in fields
    job_id = made["id"]
    assert job.call("POST", f"/{job_id}/rows", json={"rows": rows[600:]}).json["rows"] == 1000

    mapping = {"Title": "title", "Notes": "description", "Company": "company_id", "Groups": "group_ids"}
    if svc.kind.money:
        mapping.update(Amount="amount", Currency="currency", Probability="probability",
                       Close="expected_close_date")
    before, events = _count(svc), _events(svc)
    assert job.map(job_id, mapping).json["status"] == "checking"
    # Before the worker: nothing is started twice, nothing goes before the check.
    assert job.call("POST", f"/{job_id}/start", 409).json["status"] == 409
    assert job.runner.drain() == 2  # 1,000 rows: two batches of 500
    checked = job.get(job_id)
    assert (checked["status"], checked["checked"], checked["valid"], checked["invalid"]) \
        == ("checked", 1000, 997, 3)
    assert (_count(svc), _events(svc)) == (before, events)  # the check wrote nothing but the rows' results
    invalid = job.rows(job_id, "invalid")
    assert [r["number"] for r in invalid] == [6, 502, 1000]
    # A blank cell leaves its field out: here the required title.
    assert invalid[0]["errors"] == [{"field": "title", "message": "Missing data for required field."}]
    assert invalid[1]["errors"][0]["field"] == "company_id"
    assert invalid[2]["errors"][0]["field"].startswith("group_ids")

    started = job.call("POST", f"/{job_id}/start", 202).json
    assert started["status"] == "running" and started["started_at"]
    job.runner.drain()
    done = job.get(job_id)
    assert (done["status"], done["processed"], done["created"], done["existing"], done["failed"]) \
        == ("done", 1000, 997, 0, 3)
    assert _count(svc) == before + 997
    result = job.result(job_id)
    assert [r["row"] for r in result] == [str(n) for n in range(2, 1002)]
    assert {r["row"] for r in result if r["status"] == "error"} == {"6", "502", "1000"}
    first = svc.get(result[0]["id"])
    assert (first["title"], first["description"], first["company_id"], sorted(first["group_ids"])) \
        == (f"{run} 0", "line one\nline two 0", None, sorted([group, other_group]))
    second = svc.get(result[1]["id"])
    assert second["company_id"] == company
    if svc.kind.money:
        assert (second["amount"], second["currency"], second["probability"], second["expected_close_date"]) \
            == ("1250.50", "EUR", 40, "2027-01-31")

    # The same file again: every row exists (the same ids), nothing is made twice.
    again = job.upload(columns, rows[:5000])
    job.map(again["id"], mapping)
    job.runner.drain()
    job.call("POST", f"/{again['id']}/start", 202)
    job.runner.drain()
    rerun = job.get(again["id"])
    assert (rerun["status"], rerun["created"], rerun["existing"], rerun["failed"]) == ("done", 0, 997, 3)
    assert [r["id"] for r in job.result(again["id"])] == [r["id"] for r in result]
    assert _count(svc) == before + 997


@pytest.mark.parametrize("name", ["leads"])
def test_keys_mapping_rules_cancel_and_visibility(services, name):  # noqa: F811
    svc = services(name)
    svc.seed(svc.kind.kind)
    job = Job(svc)
    columns = ["Ref", "Title", "Extra"]
    rows = [["A-1", "Same", ""], ["", "No key", ""], ["A-1", "Same key again", ""], ["A-2", "Two", ""],
            ["A-3", "Three"]]
    made = job.upload(columns, rows)
    job_id = made["id"]
    assert made["sample"][4]["cells"] == ["A-3", "Three", ""]  # a short row is padded

    def refused(mapping: dict[str, str], key_column: str | None = None) -> list[str]:
        return [e["field"] for e in job.map(job_id, mapping, key_column, 422).json["errors"]]

    assert refused({"Nope": "title"}) == ["mapping.Nope", "mapping"]
    assert refused({"Title": "nope"}) == ["mapping.Title", "mapping"]
    assert refused({"Title": "title", "Extra": "title"}) == ["mapping.Extra"]
    assert refused({"Extra": "description"}) == ["mapping"]  # title is required
    assert refused({"Title": "title", "Ref": "key"}) == ["mapping.Ref"]  # the key is not a field
    assert refused({"Title": "title"}, "Nope") == ["key_column"]
    assert job.get(job_id)["status"] == "uploading"  # nothing changed on a refusal

    job.map(job_id, {"Title": "title"}, "Ref")
    job.runner.drain()
    assert [(r["status"], r["error"]) for r in job.rows(job_id)] == [
        ("valid", None), ("invalid", "Ref: The key column is empty ('Ref')."), ("valid", None), ("valid", None),
        ("valid", None)]
    # A new mapping checks again: without the key column every row has its own digest key.
    assert job.map(job_id, {"Title": "title", "Extra": "description"}).json["status"] == "checking"
    assert {r["status"] for r in job.rows(job_id)} == {"pending"}
    job.runner.drain()
    assert job.get(job_id)["valid"] == 5
    job.map(job_id, {"Title": "title"}, "Ref")
    job.runner.drain()
    job.call("POST", f"/{job_id}/start", 202)
    job.call("PUT", f"/{job_id}/mapping", 409, json={"mapping": {"Title": "title"}})
    job.call("POST", f"/{job_id}/rows", 409, json={"rows": [["x", "y"]]})
    job.runner.drain()
    result = job.result(job_id)
    assert [r["status"] for r in result] == ["created", "error", "exists", "created", "created"]
    assert result[2]["id"] == result[0]["id"]
    assert svc.get(result[0]["id"])["title"] == "Same"
    job.call("DELETE", f"/{job_id}", 409)  # done: nothing to cancel
    assert job.call("GET", f"/{job_id}/result", 406, headers={**auth(), "Accept": "application/json"}).json["status"] \
        == 406
    job.call("GET", f"/{job_id}/result", headers={**auth(), "Accept": "text/csv, application/json;q=0.5"})

    # Identical rows without a key column: distinct keys (the occurrence), the same keys next time.
    twins = job.upload(["Title"], [["Twin"], ["Twin"], ["Other"]])
    job.map(twins["id"], {"Title": "title"})
    job.runner.drain()
    job.call("POST", f"/{twins['id']}/start", 202)
    job.runner.drain()
    assert [r["status"] for r in job.result(twins["id"])] == ["created"] * 3

    # Cancel: the worker takes no more rows; what was made stays.
    cancelled = job.upload(["Title"], [[f"C {i}"] for i in range(1200)])
    job.map(cancelled["id"], {"Title": "title"})
    job.runner.drain()
    job.call("POST", f"/{cancelled['id']}/start", 202)
    assert job.runner.round()  # one batch of 500
    count = _count(svc)
    assert job.call("DELETE", f"/{cancelled['id']}").json["status"] == "cancelled"
    assert not job.runner.round() and _count(svc) == count
    assert job.get(cancelled["id"])["created"] == 500
    job.call("POST", f"/{cancelled['id']}/start", 409)
    assert job.call("DELETE", f"/{cancelled['id']}").json["status"] == "cancelled"

    # Someone else - another user, the same user id in another office - gets 404 everywhere.
    for stranger in (auth(user="u2"), auth(user="u1", office="o2")):
        for method, path in (("GET", f"/{job_id}"), ("GET", f"/{job_id}/rows"), ("GET", f"/{job_id}/result"),
                             ("DELETE", f"/{job_id}"), ("POST", f"/{job_id}/start")):
            job.call(method, path, 404, headers=stranger)
        job.call("PUT", f"/{job_id}/mapping", 404, headers=stranger, json={"mapping": {"Title": "title"}})
        assert job.call("GET", "", headers=stranger).json["items"] == []
    mine = job.call("GET").json["items"]
    assert [j["id"] for j in mine][:2] == [cancelled["id"], twins["id"]] and mine[0]["sample"] == []
    # The collection's create permission first: 403.
    job.call("GET", "", 403, headers=auth(("viewer",)))
    job.call("POST", "", 403, headers=auth(("viewer",)), json={"file_name": "x.csv", "columns": ["a"]})


@pytest.mark.parametrize("name", ["opportunities"])
def test_the_limits_and_the_office_rule(services, name):  # noqa: F811
    svc = services(name)
    svc.seed(svc.kind.kind)
    job = Job(svc)

    def field(body: dict[str, Any], path: str = "", method: str = "POST") -> str:
        r = job.call(method, path, 422, json=body)
        return str(r.json["errors"][0]["field"])

    assert field({"file_name": "a.csv", "columns": ["a", "a"]}) == "columns"
    assert field({"file_name": "a.csv", "columns": [f"c{i}" for i in range(201)]}) == "columns"
    assert field({"file_name": "a.csv", "columns": []}) == "columns"
    assert field({"file_name": "a.csv", "columns": ["a"], "rows": [["x", "y"]]}) == "rows.0"
    assert field({"file_name": "a.csv", "columns": ["a"], "rows": [["x" * 10_001]]}).startswith("rows.0.0")
    assert field({"file_name": "a.csv", "columns": ["a"], "rows": [["x"]] * 5001}) == "rows"
    assert field({"file_name": "", "columns": ["a"]}) == "file_name"
    assert job.call("GET").json["items"] == []  # nothing was made by a refusal
    made = job.upload(["Title", "Office", "Probability"], [["Mine", "", "50"], ["Elsewhere", "o2", "50"],
                                                           ["Bad number", "", "fifty"]],
                      headers=auth(("marketing", "account_manager"), user="s1"))
    seller = Job(svc, auth(("marketing", "account_manager"), user="s1"))
    assert field({"rows": []}, f"/{made['id']}/rows") == "rows"
    seller.map(made["id"], {"Title": "title", "Office": "office_id", "Probability": "probability"})
    seller.runner.drain()
    rows = seller.rows(made["id"])
    assert [r["status"] for r in rows] == ["valid", "invalid", "invalid"]
    assert "admin" in rows[1]["error"] and rows[2]["errors"][0]["field"] == "probability"


def test_the_default_key_fits_and_is_stable():
    assert row_key("d" * 64, 0, 200) == row_key("d" * 64, 0, 200) != row_key("d" * 64, 1, 200)
    assert row_key("d" * 64, 0, 200).startswith("row:") and len(row_key("d" * 64, 0, 40)) == 40

"""Figure 9: an import of leads (100,000 at ``BENCH_SCALE=1``) against the same rows sent as bulk API calls by a script.

The baseline is what a person with a script does: the rows in calls of 500 to
``POST /v1/leads/bulk`` (action ``create``, a key per row), one call after another, keeping the
gateway's cookie as ``requests.Session`` does. The import is what the console does with the same
rows as a CSV (API.md, "Imports"): the upload (``POST /v1/leads/imports`` and ``.../rows`` in
chunks), the mapping with its check of every row (``PUT .../mapping``, until ``checked``), and the
run (``POST .../start``, until ``done``), which the leads worker does in batches. The goal (issue
17: <= 1.2x) is on the run: the import's counterpart of the script's calls. The upload and the
check, which the script does not do, are reported next to it against the same baseline.

Each side writes into an office of its own (``bench-import-<tag>-script`` / ``-import``), so
neither finds the other's idempotency keys. The number of rows follows ``BENCH_SCALE``: 100,000 at
1, 10,000 at the default 0.1.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from crm_devstack.bench.report import Goal, Row
from crm_devstack.errors import DevstackError

if TYPE_CHECKING:
    from crm_devstack.bench.figures import Bench

IMPORT_ROWS = 100_000
IMPORT_GOAL_RATIO = 1.2
BATCH = 500  # the bulk create's largest call, as the import's worker batches
UPLOAD_ROWS = 5_000  # the import API's rows per upload call
COLUMNS = ["Title", "Description"]
BASELINE = "bulk API calls from a script"


def rows_for(scale: float) -> int:
    """The import's rows: ``IMPORT_ROWS`` at ``BENCH_SCALE=1``, a tenth at the default (both sides
    of a 100,000-row figure take minutes each here), 1,000 at the least."""
    return max(1_000, round(IMPORT_ROWS * min(1.0, scale)))


def _rows(n: int, tag: str) -> list[list[str]]:
    return [[f"Bench import {tag} {i}", f"row {i} of the bench's import file"] for i in range(n)]


def _check(response: requests.Response, what: str, status: int = 200) -> dict[str, Any]:
    if response.status_code != status:
        raise DevstackError(f"{what} answered {response.status_code}: {response.text[:500]}")
    return dict(response.json())


def _script(bench: Bench, office: str, rows: list[list[str]], tag: str) -> float:
    """The rows as bulk create calls of ``BATCH``, one after another; seconds taken."""
    session = requests.Session()
    session.headers.update(bench.platform.auth(("marketing",), user=office, office=office))
    started = time.monotonic()
    for start in range(0, len(rows), BATCH):
        items = [{"key": f"script-{tag}-{start + i}", "title": title, "description": description}
                 for i, (title, description) in enumerate(rows[start:start + BATCH])]
        results = _check(session.post(f"{bench.gateway}/v1/leads/bulk", json={"action": "create", "items": items},
                                      timeout=120), "POST /v1/leads/bulk")["results"]
        failed = [r for r in results if r["status"] != "created"]
        if failed:
            raise DevstackError(f"the script's bulk create did not create an item: {failed[0]}")
    return time.monotonic() - started


def _until(session: requests.Session, url: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
    """The job once its status is one of ``statuses`` (polled: the worker does the work)."""
    deadline = time.monotonic() + timeout
    while True:
        job = _check(session.get(url, timeout=30), f"GET {url}")
        if job["status"] in statuses:
            return job
        if job["status"] == "cancelled" or time.monotonic() > deadline:
            raise DevstackError(f"the import is {job['status']!r} after {timeout:g} s, waiting for {statuses}: {job}")
        time.sleep(0.1)


def _import(bench: Bench, office: str, rows: list[list[str]], log: Callable[[str], None]) -> dict[str, Any]:
    """The rows as the console imports a CSV; the seconds of each phase and the job at the end."""
    session = requests.Session()
    session.headers.update(bench.platform.auth(("marketing",), user=office, office=office))
    base = f"{bench.gateway}/v1/leads/imports"
    started = time.monotonic()
    job = _check(session.post(base, json={"file_name": "bench-leads.csv", "columns": COLUMNS,
                                          "rows": rows[:UPLOAD_ROWS]}, timeout=120), "POST /v1/leads/imports", 201)
    url = f"{base}/{job['id']}"
    for start in range(UPLOAD_ROWS, len(rows), UPLOAD_ROWS):
        _check(session.post(f"{url}/rows", json={"rows": rows[start:start + UPLOAD_ROWS]}, timeout=120),
               "POST .../rows")
    uploaded = time.monotonic()
    _check(session.put(f"{url}/mapping", json={"mapping": {"Title": "title", "Description": "description"},
                                               "key_column": None}, timeout=60), "PUT .../mapping")
    checked_job = _until(session, url, ("checked",), timeout=3600)
    checked = time.monotonic()
    if checked_job["invalid"]:
        raise DevstackError(f"the import's check found invalid rows in the bench's file: {checked_job}")
    log(f"    uploaded in {uploaded - started:.1f} s, checked in {checked - uploaded:.1f} s")
    _check(session.post(f"{url}/start", timeout=60), "POST .../start", 202)
    done_job = _until(session, url, ("done",), timeout=3600)
    finished = time.monotonic()
    if done_job["created"] != len(rows):
        raise DevstackError(f"the import created {done_job['created']} of {len(rows)} rows: {done_job}")
    return {"upload_s": uploaded - started, "check_s": checked - uploaded, "run_s": finished - checked,
            "job_id": job["id"]}


def figure(bench: Bench) -> list[Row]:
    n = rows_for(bench.plan.scale)
    tag = uuid.uuid4().hex[:8]
    bench.say(f"figure 9: an import of {n:,} leads vs the same rows as bulk API calls from a script")
    rows = _rows(n, tag)
    script_office, import_office = f"bench-import-{tag}-script", f"bench-import-{tag}-import"
    bench.say(f"  the script: {n:,} rows in calls of {BATCH}, one after another")
    script_s = _script(bench, script_office, rows, tag)
    bench.say(f"    {script_s:.1f} s ({n / script_s:,.0f} rows/s)")
    bench.settle("figure 9's script")
    bench.say(f"  the import: upload, check, run (the leads worker, batches of {BATCH})")
    phases = _import(bench, import_office, rows, bench.say)
    run_s = phases["run_s"]
    whole = phases["upload_s"] + phases["check_s"] + run_s
    ratio = run_s / script_s
    bench.say(f"    run {run_s:.1f} s ({n / run_s:,.0f} rows/s): {ratio:.2f}x the script "
              f"(goal <= {IMPORT_GOAL_RATIO:g}x); upload + check + run {whole:.1f} s")
    bench.import_offices.extend([script_office, import_office])
    bench.details["import"] = {"rows": n, "script_s": round(script_s, 2),
                               **{k: round(v, 2) for k, v in phases.items() if k.endswith("_s")},
                               "ratio_run_to_script": round(ratio, 3), "goal_ratio": IMPORT_GOAL_RATIO,
                               "goal_met": ratio <= IMPORT_GOAL_RATIO,
                               "offices": [script_office, import_office]}
    note = f"{n:,} leads, two columns; the script: POST /v1/leads/bulk create, {BATCH} a call, one at a time"
    return [
        Row("import", "run (start -> done)", "s", run_s, BASELINE, script_s,
            f"{note}; the import's worker, batches of {BATCH}", Goal(at_most=True, factor=IMPORT_GOAL_RATIO,
                                                                    source="issue 17")),
        Row("import", "upload + check + run", "s", whole, BASELINE, script_s,
            f"the console's whole import: the CSV's rows uploaded ({UPLOAD_ROWS:,} a call, "
            f"{phases['upload_s']:.1f} s), every row checked before anything is written ({phases['check_s']:.1f} s), "
            "then the run; the script checks nothing first"),
    ]


def clean_up(bench: Bench) -> None:
    """Delete the leads the figure made (through the API: they had events), office by office."""
    for office in bench.import_offices:
        headers = bench.platform.auth(("marketing",), user=office, office=office)
        while True:
            page = requests.get(f"{bench.gateway}/v1/leads", params={"view": "office", "page_size": "200"},
                                headers=headers, timeout=60).json()
            ids = [item["id"] for item in page.get("items", [])]
            if not ids:
                break
            requests.post(f"{bench.gateway}/v1/leads/bulk", json={"ids": ids, "action": "delete"},
                          headers=headers, timeout=120)

"""crm_kit.imports' worker loop on SQLite with a stand-in bulk create: a batch that keeps failing is
retried, then marked failed with the reason, and the job (and the jobs after it) go on; the loop
keeps running and stops on its event."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from marshmallow import RAISE, Schema, validate
from sqlalchemy import MetaData

from crm_kit.db import Database
from crm_kit.imports import Importer, ImportRunner, Imports, add_import_tables
from crm_kit.imports.runner import ATTEMPTS
from crm_kit.web import Identity
from crm_kit.web.fields import Text


class Item(Schema):
    key = Text(required=True, validate=validate.Length(min=1, max=200))
    name = Text(required=True)


ME = Identity("u1", "U1", "o1", ("admin",), frozenset({"things:create"}))


@pytest.fixture
def world(tmp_path: Path) -> Any:
    metadata = MetaData()
    jobs, rows = add_import_tables(metadata)
    db = Database(f"sqlite:///{tmp_path / 'imports.sqlite3'}")
    metadata.create_all(db.engine)
    calls: list[list[dict[str, Any]]] = []

    def create_batch(session: Any, identity: Identity, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append(items)
        if any(item["name"] == "boom" for item in items):
            raise RuntimeError("the database went away")
        return [{"index": i, "status": "created", "id": f"id-{item['key'][:20]}", "error": None}
                for i, item in enumerate(items)]

    schema = Item()
    schema.unknown = RAISE
    imports = Imports(jobs, rows, [Importer("things", "things:create", schema, create_batch)])
    yield imports, db, calls
    db.dispose()


def _job(imports: Imports, db: Database, names: list[str]) -> str:
    with db.transaction() as s:
        job = imports.create(s, ME, "things", "t.csv", ["Name"], [[n] for n in names])
        imports.map(s, ME, "things", job["id"], {"Name": "name"}, None)
    return str(job["id"])


def _get(imports: Imports, db: Database, job_id: str) -> dict[str, Any]:
    with db.transaction() as s:
        return imports.load(s, ME, "things", job_id)


def test_a_batch_that_keeps_failing_is_marked_failed_and_the_rest_goes_on(world):
    imports, db, calls = world
    bad = _job(imports, db, ["boom", "fine"])
    good = _job(imports, db, ["other"])
    runner = ImportRunner(db, imports)
    for _ in range(ATTEMPTS):
        with pytest.raises(RuntimeError):
            runner.round()
    assert _get(imports, db, bad)["status"] == "checking" and _get(imports, db, bad)["checked"] == 0
    runner.drain()
    job = _get(imports, db, bad)
    assert (job["status"], job["checked"], job["invalid"]) == ("checked", 2, 2)
    with db.transaction() as s:
        errors = [r.error for r in imports.result_rows(s, bad)]
    assert all("RuntimeError: the database went away" in e for e in errors)
    assert _get(imports, db, good)["status"] == "checked" and _get(imports, db, good)["valid"] == 1


def test_the_loop_runs_until_stopped_and_survives_failures(world):
    imports, db, calls = world
    job_id = _job(imports, db, ["boom"])
    runner = ImportRunner(db, imports, idle=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    import crm_kit.imports.runner as module
    module.RETRY_SECONDS, saved = 0.01, module.RETRY_SECONDS
    try:
        thread.start()
        deadline = time.monotonic() + 30
        while _get(imports, db, job_id)["status"] != "checked":
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        assert time.monotonic() - runner.heartbeat < 5
    finally:
        stop.set()
        thread.join(10)
        module.RETRY_SECONDS = saved
    assert not thread.is_alive() and len(calls) == ATTEMPTS

"""An api under gunicorn with the kit's settings (``crm_kit.web.gunicorn_conf``): the app is built once
in the master (``preload_app``) and the workers are forked from it, so they share its memory; each
worker still gets database connections of its own, and the multiprocess metrics count every
worker's requests (issue 19, "Memory")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from crm_devstack.memory import measure
from crm_devstack.ports import free_port
from crm_devstack.processes import terminate_group
from crm_devstack.supervisor import wait_http_ok
from crm_kit.db import Database
from crm_kit.web import issue_token

pytestmark = pytest.mark.integration
SECRET = "integration-secret-long-enough-for-hs256"
SERVICE_BIN = Path(sys.prefix) / "bin" / "crm-service"


def test_a_forked_worker_gets_a_pool_of_its_own_and_leaves_the_masters_connections_open(tmp_path):
    from crm_kit.web import gunicorn_conf

    database = Database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    database.ping()  # the master's pool now holds a connection
    masters = database.engine.pool
    assert masters.checkedin() == 1
    server = SimpleNamespace(app=SimpleNamespace(callable=SimpleNamespace(extensions={"crm_database": database})))
    gunicorn_conf.post_fork(server, None)
    assert database.engine.pool is not masters
    assert database.engine.pool.checkedin() == 0
    connection = masters.connect()  # still open: closing it in a worker would close it under the master
    assert connection.cursor().execute("SELECT 1").fetchone() == (1,)
    connection.close()
    database.dispose()


def _requests_counted(metrics: str, route: str) -> float:
    pattern = re.compile(r'^crm_http_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)
    return sum(float(m["value"]) for m in pattern.finditer(metrics)
               if f'route="{route}"' in m["labels"] and 'status="200"' in m["labels"])


def test_api_workers_are_forked_from_a_master_that_built_the_app(tmp_path):
    env = {**os.environ, "CRM_SERVICE_NAME": "catalogue", "CRM_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET, "CRM_LOG_FORMAT": "text",
           "CRM_WEB_CONCURRENCY": "2", "CRM_WEB_THREADS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    subprocess.run([str(SERVICE_BIN), "catalogue", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    url = f"http://127.0.0.1:{free_port()}"
    with open(tmp_path / "api.log", "wb") as log:
        api = subprocess.Popen([str(SERVICE_BIN), "catalogue", "api", "--bind", url.removeprefix("http://")],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http_ok(f"{url}/healthz", timeout=120,
                     check=lambda: api.poll() is None or pytest.fail((tmp_path / "api.log").read_text()[-3000:]))
        token = issue_token(SECRET, user_id="u1", name="U", office_id="o1", roles=["viewer"])
        with requests.Session() as session:  # keep-alive: one connection, one worker at a time
            answers = [session.get(f"{url}/v1/lead-stages", headers={"Authorization": f"Bearer {token}"},
                                   timeout=30) for _ in range(20)]
        # A connection each: either worker may take any of them; the metrics count them all.
        answers += [requests.get(f"{url}/v1/lead-stages", headers={"Authorization": f"Bearer {token}"}, timeout=30)
                    for _ in range(10)]
        assert [a.status_code for a in answers] == [200] * 30
        assert len({a.content for a in answers}) == 1

        processes = measure({"api": [api.pid]}).group("api").processes
        workers = [p for p in processes if p.pid != api.pid]
        assert len(workers) == 2
        for worker in workers:  # most of a worker's pages are the master's (the app it built), shared
            assert worker.private < worker.rss / 2, worker

        metrics = requests.get(f"{url}/metrics", timeout=30).text
        assert _requests_counted(metrics, "/v1/lead-stages") == 30
    finally:
        terminate_group(api, 20)

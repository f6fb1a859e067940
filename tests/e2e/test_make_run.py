"""`make run`'s platform as a newcomer gets it: ``python -m crm_devstack start`` in a fresh folder on
free ports (embedded Kafka, SQLite), its services forked from the fork server. A lead created
through the gateway shows on its timeline at once (the leads relay, Kafka and the linking worker,
each in a fork), it prints as a PDF (a renderer process of multiprocessing's own fork server, started
from a fork), and the forks' metrics are prometheus-client's multiprocess ones."""

from __future__ import annotations

import json

import requests

from crm_devstack.embedded import embedded_stack
from crm_devstack.forked import NAME as FORKSERVER
from crm_devstack.stack import ALL_SERVICES, SERVICES, make_token


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_make_run_serves_a_lead_and_its_timeline_from_forked_services() -> None:
    with embedded_stack(log=lambda _line: None) as stack:
        children = json.loads(stack.config.state_file.read_text())["children"]
        expected = {f"{name}-api" for name in ALL_SERVICES} | {f"{name}-worker" for name in SERVICES}
        assert set(children) == expected | {FORKSERVER}
        assert {name for name in expected if _parent(children[name]) == children[FORKSERVER]} == expected

        gateway = stack.config.gateway_url
        session = requests.Session()  # its consistency cookie makes every read follow its writes
        token = make_token(stack.config.jwt_secret, user="newcomer", office="office-1", roles=("marketing",))
        session.headers["Authorization"] = f"Bearer {token}"
        created = session.post(f"{gateway}/v1/leads", json={"title": "First lead of make run"}, timeout=60)
        assert created.status_code == 201, created.text
        lead = created.json()
        timeline = session.get(f"{gateway}/v1/leads/{lead['id']}/timeline", timeout=60)
        assert timeline.status_code == 200, timeline.text
        assert [(item["type"], item["data"]["title"]) for item in timeline.json()["items"]] == [
            ("created", "First lead of make run")]

        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {make_token(stack.config.jwt_secret, roles=('admin',))}"
        template = admin.post(f"{gateway}/v1/templates", timeout=60, json={
            "kind": "print", "name": "Sheet", "body": "<h1>{{ lead.title }}</h1>", "visible_at": "lead_stage",
            "stage_ids": [lead["stage_id"]]})
        assert template.status_code == 201, template.text
        printed = admin.post(f"{gateway}/v1/leads/{lead['id']}/print", json={"template_id": template.json()["id"]},
                             headers={"Accept": "application/pdf"}, timeout=60)
        assert printed.status_code == 200, printed.text
        assert printed.headers["Content-Type"] == "application/pdf" and printed.content.startswith(b"%PDF")

        api_metrics = requests.get(f"{stack.config.api_url('leads')}/metrics", timeout=10).text
        assert 'crm_http_requests_total{' in api_metrics and 'method="POST"' in api_metrics
        worker_metrics = requests.get(f"http://127.0.0.1:{stack.config.worker_ports['linking']}/metrics",
                                      timeout=10).text
        assert 'crm_events_consumed_total{' in worker_metrics and 'result="applied"' in worker_metrics

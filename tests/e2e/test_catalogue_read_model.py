"""Other services' copies of the catalogue converge on the catalogue's own state.

Changes go through the gateway; the catalogue publishes them on crm.catalogue.v1; the leads
and linking workers keep their copies. Then a copy is rebuilt from an empty database and
reaches the same state.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests
from sqlalchemy import create_engine, select

from crm_catalogue_view import consumer_spec
from crm_catalogue_view.model import VIEW
from crm_kafka.clients import consumer_config, idempotent_producer
from crm_kafka.consumer import IdempotentConsumer
from crm_kit.db import Database
from crm_kit.migrations import upgrade
from crm_kit.service import find_service

pytestmark = pytest.mark.e2e
TABLES = ("attributes", "categories", "groups", "priorities", "procedures", "roles", "sources", "stage-groups")


def list_all(platform, path: str) -> list[dict]:
    items, token = [], None
    while True:
        params = {"page_size": 200, **({"page_token": token} if token else {})}
        r = requests.get(f"{platform.gateway_url}{path}", params=params, headers=platform.auth(), timeout=10)
        assert r.status_code == 200, (path, r.text)
        items += r.json()["items"]
        token = r.json()["next_page_token"]
        if not token:
            return items


def catalogue_state(platform) -> dict[str, tuple[int, bool]]:
    """Every live entity the catalogue serves: id -> (version, active)."""
    paths = ["/v1/templates"]
    for kind in ("lead", "opportunity"):
        paths.append(f"/v1/{kind}-stages")
        paths += [f"/v1/{kind}-tables/{table}" for table in TABLES]
    state = {}
    for path in paths:
        for item in list_all(platform, path):
            state[item["id"]] = (item["version"], item.get("active", True))
    return state


def view_state(db_url: str) -> tuple[dict[str, tuple[int, bool]], set[str]]:
    """A service's copy: live id -> (version, active), and the ids it knows as deleted."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(VIEW.c.id, VIEW.c.version, VIEW.c.active, VIEW.c.deleted)).all()
    engine.dispose()
    live = {r.id: (r.version, r.active) for r in rows if not r.deleted}
    return live, {r.id for r in rows if r.deleted}


def converge(db_url: str, expected: dict, deleted: set[str], timeout: float = 60) -> None:
    """Poll a copy's database directly (not through the gateway, so no read-your-writes): the
    consumers apply the catalogue's events asynchronously; a rebuilt copy replays them from 0."""
    deadline = time.monotonic() + timeout
    live, gone = view_state(db_url)
    while time.monotonic() < deadline:
        live, gone = view_state(db_url)
        if live == expected and deleted <= gone:
            return
        time.sleep(0.2)
    missing = {k: v for k, v in expected.items() if live.get(k) != v}
    extra = {k: v for k, v in live.items() if k not in expected}
    raise AssertionError(f"the copy did not converge: differs on {missing}, has extra {extra}, "
                         f"deleted not seen {deleted - gone}")


def call(platform, method: str, path: str, **kw) -> requests.Response:
    r = requests.request(method, f"{platform.gateway_url}{path}", headers={**platform.auth(), **kw.pop("headers", {})},
                         timeout=10, **kw)
    assert r.status_code < 300, (method, path, r.status_code, r.text)
    return r


def test_copies_converge_after_creates_updates_deletes_and_a_rebuild(platform, postgres):
    tag = uuid.uuid4().hex[:6].upper()
    group = call(platform, "POST", "/v1/lead-tables/stage-groups",
                 json={"names": {"en": f"Group {tag}", "nl": f"Groep {tag}"}, "code": f"G{tag}"}).json()
    stage = call(platform, "POST", "/v1/lead-stages",
                 json={"names": {"en": f"Stage {tag}"}, "code": f"S{tag}", "stage_group_id": group["id"],
                       "color": "#336699"}).json()
    template = call(platform, "POST", "/v1/templates",
                    json={"kind": "email", "name": f"Mail {tag}", "subject": "Hello", "body": "Hi {{ lead.title }}",
                          "visible_at": "lead_stage", "stage_ids": [stage["id"]]}).json()
    etag = call(platform, "GET", f"/v1/lead-stages/{stage['id']}").headers["ETag"]
    call(platform, "PATCH", f"/v1/lead-stages/{stage['id']}", json={"names": {"en": f"Stage {tag}", "nl": "Fase"}},
         headers={"If-Match": etag})
    source = call(platform, "POST", "/v1/opportunity-tables/sources", json={"names": {"en": f"Src {tag}"},
                                                                             "code": f"SRC{tag}"}).json()
    call(platform, "DELETE", f"/v1/opportunity-tables/sources/{source['id']}")
    call(platform, "DELETE", f"/v1/templates/{template['id']}")

    expected = catalogue_state(platform)
    assert stage["id"] in expected and source["id"] not in expected
    deleted = {source["id"], template["id"]}
    for service in ("leads", "linking"):
        converge(platform.db_urls[service], expected, deleted)

    # Rebuild: an empty database gets the whole catalogue from offset 0.
    fresh_url = postgres.create_database("rebuild_" + uuid.uuid4().hex[:8])
    spec = find_service("leads")
    upgrade(fresh_url, spec.migrations, spec.metadata)
    fresh = Database(fresh_url)
    bootstrap = platform.config.kafka_bootstrap
    view = consumer_spec()
    group_id = "leads.catalogue-rebuild-" + tag
    consumer = IdempotentConsumer(group_id, view.topics, view.handler, fresh, consumer_config(bootstrap, group_id),
                                  lambda: idempotent_producer(bootstrap), "leads")
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        converge(fresh_url, expected, deleted)
    finally:
        stop.set()
        thread.join(timeout=30)
        fresh.dispose()


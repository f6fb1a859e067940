"""The web edge's wait for the read models (``Crm-Require-*`` from the gateway), through the kit's
sample service, on SQLite and PostgreSQL: the first look is made in the request's own transaction;
a request that had to wait reads what the consumer applied meanwhile, never an older snapshot."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sample_app import make_app, notes
from sqlalchemy import insert
from test_web_edge import auth

from crm_kit import consistency
from crm_kit.consistency import OFFSETS, ReadModels
from crm_kit.db import utcnow

TOPIC = "crm.things.v1"


@pytest.fixture
def edge(any_db_url: str):
    app, db = make_app(any_db_url)
    app.extensions["crm_read_models"] = ReadModels("sample", db, {TOPIC: ["things"]}, wait=5.0)
    yield app.test_client(), db
    db.dispose()


def required(offset: int, mode: str = consistency.STRICT, wait: float = 5.0) -> dict[str, str]:
    return {**auth(), consistency.REQUIRE_OFFSETS: consistency.encode_offsets({TOPIC: {0: offset}}),
            consistency.REQUIRE_MODE: mode, consistency.REQUIRE_WAIT: str(wait)}


def apply(db, title: str, next_offset: int) -> None:
    """What a consumer does: its effect and its offset in one transaction."""
    with db.transaction() as s:
        s.execute(insert(notes).values(id=str(uuid.uuid4()), title=title, version=1, created_at=utcnow()))
        s.execute(OFFSETS.delete().where(OFFSETS.c.consumer == "things"))
        s.execute(insert(OFFSETS).values(consumer="things", topic=TOPIC, partition=0, next_offset=next_offset))


def titles(resp) -> list[str]:
    assert resp.status_code == 200, resp.json
    return [n["title"] for n in resp.json["items"]]


def test_a_fresh_read_model_answers_at_once(edge):
    client, db = edge
    apply(db, "first", 1)
    resp = client.get("/v1/notes", headers=required(1))
    assert titles(resp) == ["first"] and consistency.STALE not in resp.headers
    assert titles(client.get("/v1/notes", headers=required(0))) == ["first"]
    assert titles(client.get("/v1/notes", headers={**auth(), consistency.REQUIRE_OFFSETS: consistency.encode_offsets(
        {"crm.other.v1": {0: 99}})})) == ["first"]  # a topic nothing here reads: nothing to wait for


def test_a_request_that_waited_reads_what_the_consumer_applied_meanwhile(edge):
    client, db = edge
    apply(db, "first", 1)
    later = threading.Timer(0.3, apply, (db, "second", 2))
    later.start()
    try:
        started = time.monotonic()
        resp = client.get("/v1/notes", headers=required(2))
        assert time.monotonic() - started >= 0.25
        assert sorted(titles(resp)) == ["first", "second"] and consistency.STALE not in resp.headers
    finally:
        later.join()


def test_a_read_model_still_behind_after_the_wait_is_stale_or_unavailable(edge):
    client, db = edge
    apply(db, "first", 1)
    lenient = client.get("/v1/notes", headers=required(5, consistency.LENIENT, wait=0.05))
    assert titles(lenient) == ["first"] and lenient.headers[consistency.STALE] == "true"
    strict = client.get("/v1/notes", headers=required(5, wait=0.05))
    assert strict.status_code == 503 and strict.headers["Retry-After"] == str(consistency.RETRY_AFTER_SECONDS)
    assert strict.content_type == "application/problem+json"


def test_an_answer_says_when_no_copy_had_a_part_in_it(edge):
    """``Crm-Copies: none`` tells the gateway a refusal is final: here, a body refused before the wait
    for the read models. An answer after the wait says nothing (a copy may have had its part)."""
    client, db = edge
    apply(db, "first", 1)
    refused = client.post("/v1/notes", json={"title": ""}, headers=required(1))
    assert refused.status_code == 422 and refused.headers[consistency.COPIES] == "none"
    listed = client.get("/v1/notes", headers=required(1))
    assert listed.status_code == 200 and consistency.COPIES not in listed.headers
    missing = client.get(f"/v1/notes/{uuid.uuid4()}", headers=required(1))
    assert missing.status_code == 404 and consistency.COPIES not in missing.headers

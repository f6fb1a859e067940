"""Read-your-writes in one service, on a real broker: the relay's positions cover what it published,
and a read model is "fresh" for a position exactly when its consumer has applied it - including a
read model rebuilt on an empty database, which is behind until it has replayed.

(Named to run after test_exactly_once.py: that test counts the first 50 events a fresh consumer
applies on the shared test topic, so it must find only its own there.)"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka_roles import TOPIC, make_consumer, prepare
from test_exactly_once import wait_for, write_events

from crm_kafka.api import build_positions_api
from crm_kafka.clients import consumer_config, idempotent_producer
from crm_kafka.relay import OutboxRelay
from crm_kit import consistency
from crm_kit.consistency import ConsistencyError, ReadModels, Requirement, outbox_position
from crm_kit.db import Database
from crm_kit.settings import load_settings
from crm_kit.web import create_app, issue_token

pytestmark = pytest.mark.integration


def high_watermarks(bootstrap: str) -> dict[int, int]:
    reader = Consumer(consumer_config(bootstrap, "watermarks-" + uuid.uuid4().hex[:8]))
    try:
        partitions = reader.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        return {p: reader.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in partitions}
    finally:
        reader.close()


def test_the_outbox_position_covers_every_published_row_and_waits_for_the_rest(any_db_url, bootstrap):
    db = prepare(any_db_url)
    consistency.start_request()
    write_events(db, "pos-" + uuid.uuid4().hex[:8], 12, per_tx=4)
    last = consistency.written()
    assert last is not None
    # Committed, not yet on Kafka: nobody may be told these events are readable.
    with pytest.raises(ConsistencyError):
        outbox_position("kit-tests", db, last, wait=0.05)
    relay = OutboxRelay(db, lambda: idempotent_producer(bootstrap), "kit-tests")
    assert relay.publish_pending() == 12
    outbox_id, offsets = outbox_position("kit-tests", db, last, wait=1.0)
    assert outbox_id == last
    # Every partition the relay wrote to, at the end of what it wrote (nobody else writes these
    # rows' partitions between the publish and this read).
    marks = high_watermarks(bootstrap)
    assert offsets[TOPIC] and all(offsets[TOPIC][p] == marks[p] for p in offsets[TOPIC])
    # "Everything committed now" is the same here; a number beyond the newest row is capped.
    assert outbox_position("kit-tests", db, None, wait=1.0) == (last, offsets)
    assert outbox_position("kit-tests", db, last + 1000, wait=1.0)[0] == last
    db.dispose()


def test_the_consistency_endpoint_answers_problems_the_gateway_understands(tmp_path, bootstrap):
    """``GET /internal/consistency``: 400 for an unreadable ``Crm-Require-Wait``, 503 with
    ``Retry-After`` while a committed row is not on Kafka yet, then the position."""
    url = f"sqlite:///{tmp_path / 'positions.sqlite3'}"
    db = prepare(url)
    secret = "test-secret-that-is-long-enough-for-hs256"
    settings = load_settings("domain", {"CRM_SERVICE_NAME": "kit-tests", "CRM_DATABASE_URL": url,
                                        "CRM_KAFKA_BOOTSTRAP": bootstrap, "CRM_JWT_SECRET": secret})
    app = create_app("kit-tests", settings, [build_positions_api("kit-tests", db, 0.2)], database=db)
    client = app.test_client()
    token = issue_token(secret, user_id="u1", name="User One", office_id="o1", roles=["viewer"])
    auth = {"Authorization": f"Bearer {token}"}

    bad = client.get("/internal/consistency", headers={**auth, consistency.REQUIRE_WAIT: "soon"})
    assert bad.status_code == 400 and bad.content_type == "application/problem+json"
    assert bad.json == {"type": "https://crm.example/problems/bad-request", "title": "Bad Request", "status": 400,
                        "detail": "Crm-Require-Wait must be a number of seconds",
                        "instance": "/internal/consistency"}

    write_events(db, "api-" + uuid.uuid4().hex[:8], 2)
    behind = client.get("/internal/consistency", headers=auth)
    assert behind.status_code == 503 and behind.content_type == "application/problem+json"
    assert behind.headers["Retry-After"] == str(consistency.RETRY_AFTER_SECONDS)
    assert behind.json["type"] == "https://crm.example/problems/service-unavailable"
    assert behind.json["title"] == "Service Unavailable" and behind.json["detail"]

    OutboxRelay(db, lambda: idempotent_producer(bootstrap), "kit-tests").publish_pending()
    ok = client.get("/internal/consistency", headers=auth)
    assert ok.status_code == 200, ok.json
    assert ok.json["outbox_id"] > 0 and ok.json["positions"][TOPIC]
    db.dispose()


def test_a_read_model_is_fresh_once_its_consumer_applied_the_offsets(postgres, pg_url, bootstrap):
    marker = "fresh-" + uuid.uuid4().hex[:8]
    source = prepare(pg_url)
    consistency.start_request()
    write_events(source, marker, 6, per_tx=3)
    OutboxRelay(source, lambda: idempotent_producer(bootstrap), "kit-tests").publish_pending()
    _, offsets = outbox_position("kit-tests", source, consistency.written(), wait=1.0)

    def read_model(url: str, group: str) -> tuple[ReadModels, Database]:
        db = prepare(url)
        return ReadModels("kit-tests", db, {TOPIC: [group]}, wait=5.0), db

    group = "g-" + marker
    models, db = read_model(postgres.create_database("rm_" + uuid.uuid4().hex[:8]), group)
    strict = Requirement(offsets, consistency.STRICT, wait=0.1)
    with pytest.raises(ConsistencyError):
        models.wait_for(strict)  # nothing applied yet
    assert models.wait_for(Requirement(offsets, consistency.LENIENT, wait=0.1)) is False
    assert models.wait_for(Requirement({"crm.other.v1": {0: 99}}, consistency.STRICT, wait=0.1))  # not read here

    consumer = make_consumer(db, bootstrap, group, marker)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        started = time.monotonic()
        assert models.wait_for(Requirement(offsets, consistency.STRICT, wait=60.0))
        assert time.monotonic() - started < 60.0
    finally:
        stop.set()
        thread.join(timeout=30)

    # The same consumer group on an empty database (a rebuilt read model) is behind again
    # until it has replayed: the offsets that count are the database's, not the group's.
    rebuilt, rebuilt_db = read_model(postgres.create_database("rb_" + uuid.uuid4().hex[:8]), group)
    with pytest.raises(ConsistencyError):
        rebuilt.wait_for(strict)
    consumer = make_consumer(rebuilt_db, bootstrap, group, marker)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: rebuilt.wait_for(Requirement(offsets, consistency.LENIENT, wait=0.0)), 60,
                 "the rebuilt read model to replay")
    finally:
        stop.set()
        thread.join(timeout=30)
    for database in (source, db, rebuilt_db):
        database.dispose()

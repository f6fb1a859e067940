"""The HTTP edge every service shares, through a sample service built from the kit.

Tests that touch storage run twice: on SQLite (the ``make run`` default) and on a real
PostgreSQL - code that works on one and not the other must fail here.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sample_app import SECRET, make_app
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from crm_kit.settings import ConfigError, load_settings
from crm_kit.web import issue_token

PROBLEM = "application/problem+json"


def auth(roles: list[str] | None = None, user: str = "u1", secret: str = SECRET) -> dict[str, str]:
    token = issue_token(secret, user_id=user, name="User One", office_id="o1", roles=roles or ["admin"])
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def sqlite_client(tmp_path: Path):
    app, db = make_app(f"sqlite:///{tmp_path / 'edge.sqlite3'}")
    yield app.test_client(), db
    db.dispose()


@pytest.fixture
def client(any_db_url: str):
    app, db = make_app(any_db_url)
    yield app.test_client(), db
    db.dispose()


def count_notes(db) -> int:
    with db.transaction() as s:
        return s.execute(text("SELECT count(*) FROM notes")).scalar_one()


# -- authentication and permissions -------------------------------------------------------------

def test_missing_bad_and_expired_tokens_are_401_problems(sqlite_client):
    c, _ = sqlite_client
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer not.a.jwt"},
                    auth(secret="another-secret-that-is-also-long-enough")):
        r = c.get("/v1/notes", headers=headers)
        assert r.status_code == 401, headers
        assert r.content_type == PROBLEM
        assert r.json["status"] == 401 and r.json["detail"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    expired = issue_token(SECRET, user_id="u", name="n", office_id="o", roles=["admin"], ttl_seconds=-120)
    r = c.get("/v1/notes", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json["detail"]


def test_alg_none_token_is_refused(sqlite_client):
    c, _ = sqlite_client
    forged = jwt.encode({"sub": "u", "roles": ["admin"], "exp": int(time.time()) + 60}, key=None, algorithm="none")
    assert c.get("/v1/notes", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_permissions_come_from_roles(sqlite_client):
    c, db = sqlite_client
    r = c.post("/v1/notes", json={"title": "x"}, headers=auth(["viewer"]))
    assert r.status_code == 403 and r.content_type == PROBLEM and "leads:create" in r.json["detail"]
    assert count_notes(db) == 0
    assert c.get("/v1/notes", headers=auth(["viewer"])).status_code == 200
    assert c.post("/v1/notes", json={"title": "x"}, headers=auth(["marketing"])).status_code == 201
    assert c.get("/v1/notes", headers=auth(["account_manager"])).status_code == 200
    assert c.post("/v1/notes", json={"title": "y"}, headers=auth(["account_manager"])).status_code == 403


def test_rs256_tokens_accepted_only_with_a_public_key(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    token = jwt.encode({"sub": "u", "office": "o1", "roles": ["admin"], "exp": int(time.time()) + 60}, key,
                       algorithm="RS256")
    headers = {"Authorization": f"Bearer {token}"}
    app, db = make_app(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    assert app.test_client().get("/v1/notes", headers=headers).status_code == 401
    db.dispose()
    app, db = make_app(f"sqlite:///{tmp_path / 'b.sqlite3'}", CRM_JWT_PUBLIC_KEY=pem)
    assert app.test_client().get("/v1/notes", headers=headers).status_code == 200
    db.dispose()


# -- bodies ---------------------------------------------------------------------------------------

def test_body_rules(sqlite_client):
    c, db = sqlite_client
    h = auth()
    r = c.post("/v1/notes", data="{not json", headers={**h, "Content-Type": "application/json"})
    assert (r.status_code, r.content_type) == (400, PROBLEM)
    r = c.post("/v1/notes", data="title=x", headers={**h, "Content-Type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.content_type) == (415, PROBLEM)
    r = c.post("/v1/notes", json={"title": "x", "colour": "red"}, headers=h)
    assert r.status_code == 422
    assert r.json["errors"] == [{"field": "colour", "message": "Unknown field."}]
    r = c.post("/v1/notes", json={}, headers=h)
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "title"
    r = c.post("/v1/notes", json=["a list"], headers=h)
    assert r.status_code == 422
    r = c.post("/v1/notes", data=json.dumps({"title": "x" * (1024 * 1024)}),
               headers={**h, "Content-Type": "application/json"})
    assert (r.status_code, r.content_type) == (413, PROBLEM)
    assert count_notes(db) == 0


def test_unknown_query_parameters_and_bad_page_sizes_are_422(sqlite_client):
    c, _ = sqlite_client
    assert c.get("/v1/notes?colour=red", headers=auth()).status_code == 422
    assert c.get("/v1/notes?page_size=0", headers=auth()).status_code == 422
    assert c.get("/v1/notes?page_size=201", headers=auth()).status_code == 422
    assert c.get("/v1/notes?page_size=abc", headers=auth()).status_code == 422
    assert c.get("/v1/notes?page_token=garbage", headers=auth()).status_code == 422


def test_unknown_route_and_method_are_problems(sqlite_client):
    c, _ = sqlite_client
    r = c.get("/v1/nothing-here", headers=auth())
    assert (r.status_code, r.content_type) == (404, PROBLEM)
    r = c.put("/v1/notes", json={}, headers=auth())
    assert (r.status_code, r.content_type) == (405, PROBLEM)


# -- storage-backed behaviour, on SQLite and PostgreSQL -----------------------------------------

def test_business_rule_refusal_is_409_and_changes_nothing(client):
    c, db = client
    r = c.post("/v1/notes", json={"title": "forbidden"}, headers=auth())
    assert (r.status_code, r.content_type) == (409, PROBLEM)
    assert c.post("/v1/notes", json={"title": "dup"}, headers=auth()).status_code == 201
    r = c.post("/v1/notes", json={"title": "dup"}, headers=auth())  # unique constraint
    assert (r.status_code, r.content_type) == (409, PROBLEM)
    assert count_notes(db) == 1


def test_etag_and_if_match(client):
    c, db = client
    created = c.post("/v1/notes", json={"title": "v1"}, headers=auth())
    assert created.headers["ETag"] == '"1"'
    location = created.headers["Location"]
    r = c.get(location, headers=auth())
    assert r.headers["ETag"] == '"1"'
    assert c.get(location, headers={**auth(), "If-None-Match": '"1"'}).status_code == 304
    r = c.patch(location, json={"title": "v2"}, headers={**auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    r = c.patch(location, json={"title": "v3"}, headers={**auth(), "If-Match": '"1"'})
    assert (r.status_code, r.content_type) == (412, PROBLEM)
    assert c.get(location, headers=auth()).json["title"] == "v2"
    assert c.delete(location, headers={**auth(), "If-Match": '"1"'}).status_code == 412
    assert c.delete(location, headers={**auth(), "If-Match": '"2"'}).status_code == 204
    assert c.get(location, headers=auth()).status_code == 404


def test_idempotency_key_replays_and_creates_nothing_more(client):
    c, db = client
    h = {**auth(), "Idempotency-Key": "key-1"}
    first = c.post("/v1/notes", json={"title": "once"}, headers=h)
    assert first.status_code == 201
    again = c.post("/v1/notes", data=json.dumps({"title": "once"}, indent=2),
                   headers={**h, "Content-Type": "application/json"})
    assert again.status_code == 201
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_notes(db) == 1
    other = c.post("/v1/notes", json={"title": "different"}, headers=h)
    assert (other.status_code, other.content_type) == (422, PROBLEM)
    assert count_notes(db) == 1
    # Keys belong to a caller: another user's same key is a different request.
    assert c.post("/v1/notes", json={"title": "theirs"},
                  headers={**auth(user="u2"), "Idempotency-Key": "key-1"}).status_code == 201
    # A refused request is not remembered: fixing it and retrying with the key works.
    bad = c.post("/v1/notes", json={"title": "forbidden"}, headers={**auth(), "Idempotency-Key": "key-2"})
    assert bad.status_code == 409
    assert count_notes(db) == 2


def test_concurrent_requests_with_one_key_create_one_record(client):
    c, db = client
    app = c.application
    results: list[int] = []

    def call() -> None:
        with app.test_client() as own:
            r = own.post("/v1/notes", json={"title": "raced"}, headers={**auth(), "Idempotency-Key": "race"})
            results.append(r.status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 6
    assert count_notes(db) == 1


def test_cursor_pages_are_stable_under_concurrent_inserts(client):
    c, db = client
    for i in range(7):
        assert c.post("/v1/notes", json={"title": f"n{i}"}, headers=auth()).status_code == 201
    seen: list[str] = []
    r = c.get("/v1/notes?page_size=3", headers=auth())
    seen += [n["title"] for n in r.json["items"]]
    token = r.json["next_page_token"]
    # Rows inserted between pages must neither shift nor repeat what the client sees.
    c.post("/v1/notes", json={"title": "late"}, headers=auth())
    while token:
        r = c.get(f"/v1/notes?page_size=3&page_token={token}", headers=auth())
        assert r.status_code == 200
        seen += [n["title"] for n in r.json["items"]]
        token = r.json["next_page_token"]
    assert seen == [f"n{i}" for i in range(6, -1, -1)]
    # A token is bound to its query: with another page size it is still valid, tampered it is not.
    first = c.get("/v1/notes?page_size=2", headers=auth()).json["next_page_token"]
    assert c.get(f"/v1/notes?page_size=5&page_token={first}", headers=auth()).status_code == 200
    assert c.get(f"/v1/notes?page_token={first[:-2]}xx", headers=auth()).status_code == 422


def test_metrics_health_and_readiness(client):
    c, db = client
    c.get("/v1/notes", headers=auth())
    assert c.get("/healthz").json["status"] == "ok"
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["database"] == "ok"
    body = c.get("/metrics").get_data(as_text=True)
    assert 'crm_http_requests_total{method="GET",route="/v1/notes",service="sample",status="200"}' in body


def test_readiness_fails_when_the_database_is_gone(tmp_path):
    app, db = make_app(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    db.engine.dispose()
    db.engine.url = db.engine.url.set(database="/nonexistent/dir/db.sqlite3")
    app.extensions["crm"].readiness["database"] = lambda: (_ for _ in ()).throw(RuntimeError("down"))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and r.json["checks"]["database"].startswith("unavailable")


def test_responses_carry_a_correlation_id_and_echo_a_valid_one(sqlite_client):
    c, _ = sqlite_client
    assert len(c.get("/healthz").headers["X-Correlation-ID"]) >= 16
    assert c.get("/healthz", headers={"X-Correlation-ID": "abc-123"}).headers["X-Correlation-ID"] == "abc-123"
    hostile = "bad id <script>"
    assert c.get("/healthz", headers={"X-Correlation-ID": hostile}).headers["X-Correlation-ID"] != hostile


def test_openapi_describes_routes_with_schemas_and_errors(sqlite_client):
    c, _ = sqlite_client
    doc = c.get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    post = doc["paths"]["/v1/notes"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/NoteIn")
    assert {"201", "401", "403", "422", "415"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "412" in doc["paths"]["/v1/notes/{note_id}"]["patch"]["responses"]


def test_settings_fail_fast_listing_every_missing_variable():
    with pytest.raises(ConfigError) as err:
        load_settings("domain", {"CRM_MAX_BODY_BYTES": "lots"})
    message = str(err.value)
    for name in ("CRM_DATABASE_URL", "CRM_KAFKA_BOOTSTRAP", "CRM_JWT_SECRET", "CRM_MAX_BODY_BYTES"):
        assert name in message


def test_utc_timestamps_round_trip_on_both_databases(client):
    c, db = client
    created = c.post("/v1/notes", json={"title": "t"}, headers=auth()).json["created_at"]
    assert created.endswith("Z") and "+" not in created  # RFC 3339 UTC, as the contract writes it
    with db.transaction() as s:
        from sample_app import notes

        value = s.execute(select(func.max(notes.c.created_at))).scalar_one()
    assert value.utcoffset().total_seconds() == 0


def test_metrics_survive_an_empty_file_left_by_a_killed_process(tmp_path, monkeypatch):
    """A process killed between creating and sizing its metrics file leaves 0 bytes behind
    (prometheus client_python #1199): the scrape must still work."""
    from prometheus_client import CollectorRegistry, Counter, values

    from crm_kit import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    values.ValueClass = values.get_value_class()
    try:
        Counter("crm_test_things_total", "Things.", registry=CollectorRegistry()).inc(3)
        (tmp_path / "counter_99999.db").write_bytes(b"")
        body, _ = metrics.render_latest()
        assert b"crm_test_things_total 3.0" in body
    finally:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        values.ValueClass = values.get_value_class()


@pytest.mark.parametrize(("error", "status"), [
    (OperationalError("SELECT 1", {}, Exception("could not connect to server")), 503),
    (InterfaceError("SELECT 1", {}, Exception("connection already closed")), 503),  # psycopg, after a restart
    (DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True), 503),
    (DBAPIError("SELECT 1", {}, Exception("a bug in a statement")), 500),
])
def test_a_database_that_went_away_is_503_with_retry_after_and_a_bug_stays_500(tmp_path, error, status):
    app, db = make_app(f"sqlite:///{tmp_path / 'gone.sqlite3'}")

    def fails() -> None:
        raise error

    app.add_url_rule("/internal/fails", "fails", fails)
    r = app.test_client().get("/internal/fails", headers=auth())
    assert r.status_code == status and r.content_type == PROBLEM
    assert (r.headers.get("Retry-After") == "2") == (status == 503)
    db.dispose()

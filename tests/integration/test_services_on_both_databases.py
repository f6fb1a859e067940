"""Every domain service migrates and serves on SQLite and on PostgreSQL alike.

The services are built exactly as ``crm-service <name> api`` builds them (from their
ServiceSpec), against a real database; Kafka readiness is not what is tested here, so the
API's own routes are exercised through Flask's test client.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from crm_events.envelope import decode
from crm_kafka.outbox import OUTBOX
from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token

pytestmark = pytest.mark.integration
SECRET = "integration-secret-long-enough-for-hs256"
DOMAIN_SERVICES = ["catalogue", "leads", "opportunities", "linking", "triggers"]


def settings_for(name: str, db_url: str):
    return load_settings("domain", {
        "CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": db_url, "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "CRM_JWT_SECRET": SECRET,
    })


def bearer(roles: list[str]) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id="u1", name="U", office_id="o1", roles=roles)}


@pytest.mark.parametrize("name", DOMAIN_SERVICES)
def test_migrations_create_the_kit_and_service_tables_and_rerun_cleanly(name, any_db_url):
    spec = find_service(name)
    settings = settings_for(name, any_db_url)
    assert migrate(spec, settings) == 0
    assert migrate(spec, settings) == 0  # a second run (every deploy) changes nothing
    db = Database(any_db_url)
    tables = set(inspect(db.engine).get_table_names())
    db.dispose()
    assert {"outbox", "inbox", "idempotency_keys", "alembic_version"} <= tables
    assert set(spec.metadata.tables) <= tables, "the migrations and the table definitions disagree"


@pytest.mark.parametrize("plural,kind", [("leads", "lead"), ("opportunities", "opportunity")])
def test_record_services_write_their_events_through_the_outbox(plural, kind, any_db_url):
    spec = find_service(plural)
    settings = settings_for(plural, any_db_url)
    migrate(spec, settings)
    app = spec.build_app(settings)
    c = app.test_client()
    h = bearer(["admin"])

    r = c.post(f"/v1/{plural}", json={"title": "Acme expansion"}, headers={**h, "Idempotency-Key": "k1"})
    assert r.status_code == 201, r.json
    record = r.json
    assert r.headers["Location"] == f"/v1/{plural}/{record['id']}"
    assert c.post(f"/v1/{plural}", json={"title": "Acme expansion"},
                  headers={**h, "Idempotency-Key": "k1"}).json == record
    r = c.patch(f"/v1/{plural}/{record['id']}", json={"title": "Acme, phase 2"},
                headers={**h, "If-Match": r.headers["ETag"]})
    assert r.status_code == 200 and r.json["version"] == 2
    listed = c.get(f"/v1/{plural}?page_size=1", headers=h).json
    assert [item["id"] for item in listed["items"]] == [record["id"]]
    assert c.delete(f"/v1/{plural}/{record['id']}", headers={**h, "If-Match": '"1"'}).status_code == 412
    assert c.delete(f"/v1/{plural}/{record['id']}", headers={**h, "If-Match": '"2"'}).status_code == 204
    # A refused request leaves no event behind.
    assert c.post(f"/v1/{plural}", json={"title": ""}, headers=h).status_code == 422

    db = Database(any_db_url)
    with db.transaction() as s:
        rows = s.execute(select(OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload).order_by(OUTBOX.c.id)).all()
    db.dispose()
    events = [decode(row.payload) for row in rows]
    assert [e.event_type for e in events] == [f"{kind}.created", f"{kind}.updated", f"{kind}.deleted"]
    assert {row.topic for row in rows} == {f"crm.{plural}.v1"}
    assert {row.key for row in rows} == {record["id"]}
    assert [e.aggregate_version for e in events] == [1, 2, 2]
    assert events[1].record.title == "Acme, phase 2"
    assert events[0].actor.user_id == "u1"


@pytest.mark.parametrize("name,path,permission_role", [
    ("catalogue", "/v1/lead-stages", "viewer"),
    ("triggers", "/v1/triggers", "admin"),
])
def test_read_endpoints_check_the_token_in_the_service_itself(name, path, permission_role, any_db_url):
    spec = find_service(name)
    settings = settings_for(name, any_db_url)
    migrate(spec, settings)
    c = spec.build_app(settings).test_client()
    assert c.get(path).status_code == 401
    assert c.get(path, headers=bearer([permission_role])).json == {"items": [], "next_page_token": None}
    if name == "triggers":
        assert c.get(path, headers=bearer(["viewer"])).status_code == 403

"""Every domain service migrates and serves on SQLite and on PostgreSQL alike.

The services are built exactly as ``crm-service <name> api`` builds them (from their
ServiceSpec), against a real database; Kafka readiness is not what is tested here, so the
API's own routes are exercised through Flask's test client.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

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
        "CRM_JWT_SECRET": SECRET, "CRM_CATALOGUE_SEED": "false",
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


@pytest.mark.parametrize("name", DOMAIN_SERVICES)
def test_every_service_serves_its_openapi_document(name, tmp_path):
    spec = find_service(name)
    settings = settings_for(name, f"sqlite:///{tmp_path / 'openapi.sqlite3'}")
    r = spec.build_app(settings).test_client().get("/openapi.json")
    assert r.status_code == 200, r.get_data(as_text=True)
    doc = r.json
    assert doc["openapi"].startswith("3.1")
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"], (path, method)

"""The catalogue service as the tests drive it: its own app (built from its ServiceSpec exactly
as ``crm-service catalogue api`` builds it) on a real, migrated database, plus ways to look
at what it wrote (rows, outbox events) and to feed its usage consumer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_catalogue.tables import metadata
from crm_catalogue.usage import STAGE_USAGE
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token

SECRET = "catalogue-test-secret-long-enough-for-hs256"
PROBLEM = "application/problem+json"
CATALOGUE_TABLES = ["stages", "table_entries", "templates", "stage_templates", "stage_usage", "catalogue_meta"]
VERSIONED = ["stages", "table_entries", "templates"]


def bearer(roles: Iterable[str] = ("admin",), user: str = "u-admin") -> dict[str, str]:
    token = issue_token(SECRET, user_id=user, name=f"User {user}", office_id="office-1", roles=list(roles))
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer()
VIEWER = bearer(("viewer",), user="u-viewer")


class Catalogue:
    """One migrated catalogue database and a test client of the service's app on it."""

    def __init__(self, db_url: str, **env: str) -> None:
        self.spec = find_service("catalogue")
        self.settings = load_settings("domain", {
            "CRM_SERVICE_NAME": "catalogue", "CRM_DATABASE_URL": db_url, "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
            "CRM_JWT_SECRET": SECRET, **env,
        })
        self.migrate()
        self.app = self.spec.build_app(self.settings)
        self.client = self.app.test_client()
        self.db = Database(db_url)

    def migrate(self, **overrides: Any) -> None:
        """Run ``crm-service catalogue migrate`` (with some settings changed, if given)."""
        assert migrate(self.spec, self.settings.with_overrides(**overrides)) == 0

    def close(self) -> None:
        self.app.extensions["crm_database"].dispose()
        self.db.dispose()

    # -- HTTP ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.open(path, method=method, headers={**ADMIN, **(headers or {})}, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("POST", path, json=body, **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("PATCH", path, json=body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def created(self, path: str, body: Any) -> dict[str, Any]:
        r = self.post(path, body)
        assert r.status_code == 201, r.json
        return r.json

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        r = self.request(method, path, json=body, **kw) if body is not None else self.request(method, path, **kw)
        assert r.status_code in (200, 204), (r.status_code, r.json)
        return r.json

    def items(self, path: str, **kw: Any) -> list[dict[str, Any]]:
        """Every item of a list, following page tokens."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            sep = "&" if "?" in path else "?"
            r = self.get(path + (f"{sep}page_token={token}" if token else ""), **kw)
            assert r.status_code == 200, r.json
            out += r.json["items"]
            token = r.json["next_page_token"]
            if not token:
                return out

    def by_code(self, path: str, code: str) -> dict[str, Any]:
        return next(item for item in self.items(path) if item["code"] == code)

    def refused(self, status: int, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        """Send a request that must be refused with ``status`` and change nothing at all."""
        before = self.snapshot()
        r = self.request(method, path, json=body, **kw) if body is not None else self.request(method, path, **kw)
        assert r.status_code == status, (r.status_code, r.json)
        assert r.headers["Content-Type"].startswith(PROBLEM)
        assert r.json["status"] == status and r.json["detail"]
        assert self.snapshot() == before, "a refused request wrote something"
        return r.json

    # -- the database ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Row counts of every catalogue table and the outbox, and the versions of entities."""
        with self.db.transaction() as s:
            state: dict[str, Any] = {name: s.execute(select(func.count()).select_from(metadata.tables[name])).scalar()
                                     for name in [*CATALOGUE_TABLES, "outbox"]}
            for name in VERSIONED:
                table = metadata.tables[name]
                state[f"{name}.versions"] = sorted(s.execute(select(table.c.id, table.c.version)).all())
        return state

    def outbox_mark(self) -> int:
        with self.db.transaction() as s:
            return s.execute(select(func.coalesce(func.max(OUTBOX.c.id), 0))).scalar_one()

    def events(self, after: int = 0) -> list[Envelope]:
        """The outbox's events after row ``after``, decoded, in order (topic and key checked)."""
        with self.db.transaction() as s:
            rows = s.execute(select(OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload)
                             .where(OUTBOX.c.id > after).order_by(OUTBOX.c.id)).all()
        events = []
        for row in rows:
            envelope = decode(row.payload)
            assert row.topic == "crm.catalogue.v1"
            assert row.key == envelope.aggregate_id
            events.append(envelope)
        return events

    def apply(self, envelope: Envelope) -> None:
        """Hand an event to the usage consumer's handler, in a transaction as the worker does."""
        with self.db.transaction() as s:
            STAGE_USAGE.apply(s, envelope)


def record_event(kind: str, what: str, record_id: str, version: int, stage_id: str = "") -> Envelope:
    """A ``<kind>.<what>`` event as the leads/opportunities services write it."""
    payload: Any = (RecordDeleted(id=record_id, kind=kind) if what == "deleted" else
                    PipelineRecord(id=record_id, kind=kind, title="Test", stage_id=stage_id, version=version))
    return new_envelope(f"{kind}.{what}", kind, record_id, version, payload, producer=f"{kind}s-test")


def summary(events: list[Envelope]) -> list[tuple[str, str, int]]:
    """(event type, aggregate id, version) of each event."""
    return [(e.event_type, e.aggregate_id, e.aggregate_version) for e in events]

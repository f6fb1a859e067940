"""The two baseline apps of the create-lead figure: what a request costs with nothing of ours.

Both run under gunicorn with the platform's worker and thread counts (``gthread``), so the
only difference from a create-lead through the gateway is our code and the extra hop:

- ``create_json_app``: ``POST /items`` parses the JSON body and answers it back with an id
  (gunicorn + Flask + JSON, no database);
- ``create_insert_app``: ``POST /items`` inserts one row with SQLAlchemy into
  ``BENCH_DATABASE_URL`` (the same PostgreSQL as the platform) and answers it back.

Run: ``gunicorn 'crm_devstack.bench.baselines:create_insert_app()'``.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, create_engine, insert

METADATA = MetaData()
ITEMS = Table(
    "bench_items", METADATA,
    Column("id", String(36), primary_key=True),
    Column("title", String(500), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _with_health(app: Flask) -> Flask:
    app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    return app


def create_json_app() -> Flask:
    """A JSON endpoint and nothing else."""
    app = _with_health(Flask("bench-json"))

    @app.post("/items")
    def echo() -> Any:
        data = _body()
        return jsonify({"id": str(uuid.uuid4()), "title": str(data.get("title", "")),
                        "description": str(data.get("description", ""))}), 201

    return app


def create_insert_app() -> Flask:
    """A JSON endpoint that inserts one row (SQLAlchemy Core, the platform's pool settings)."""
    engine = create_engine(os.environ["BENCH_DATABASE_URL"], pool_pre_ping=True, pool_size=5, max_overflow=10)
    app = _with_health(Flask("bench-insert"))

    @app.post("/items")
    def add() -> Any:
        data = _body()
        created_at = dt.datetime.now(dt.UTC)
        row = {"id": str(uuid.uuid4()), "title": str(data.get("title", "")),
               "description": str(data.get("description", ""))}
        with engine.begin() as conn:
            conn.execute(insert(ITEMS).values(**row, created_at=created_at))
        return jsonify({**row, "created_at": created_at.isoformat()}), 201

    return app


def create_tables(url: str) -> None:
    """Create the insert app's table in a fresh database."""
    engine = create_engine(url)
    try:
        METADATA.create_all(engine)
    finally:
        engine.dispose()

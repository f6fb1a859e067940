"""Fast tests of the catalogue's rules: a SQLite file per test (made once per session by the
service's own migrate command, starter data included, then copied), the rules called directly
in a transaction each, as a request would - no HTTP, no Kafka, no PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalogue_world import Catalogue

from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings


@pytest.fixture(scope="session")
def seeded_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue database as ``crm-service catalogue migrate`` leaves it (once per test session)."""
    path = tmp_path_factory.mktemp("catalogue-template") / "catalogue.sqlite3"
    settings = load_settings("domain", {"CRM_SERVICE_NAME": "catalogue", "CRM_DATABASE_URL": f"sqlite:///{path}",
                                        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": "x" * 40,
                                        "CRM_LOG_FORMAT": "text"})
    assert migrate(find_service("catalogue"), settings) == 0
    return path


@pytest.fixture
def catalogue(seeded_database: Path, tmp_path: Path) -> Iterator[Catalogue]:
    path = tmp_path / "catalogue.sqlite3"
    shutil.copyfile(seeded_database, path)
    db = Database(f"sqlite:///{path}")
    yield Catalogue(db)
    db.dispose()

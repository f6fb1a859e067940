"""Fast tests of linking's rules: a SQLite file per test with the service's tables (no Kafka, no
PostgreSQL, no HTTP), a catalogue copy with the roles of both kinds fed with catalogue events, and
records fed to the read model as the leads and opportunities services send them
(``linking_world.World``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from linking_world import World

from crm_kit.db import Database
from crm_kit.migrations import upgrade
from crm_linking.tables import metadata


@pytest.fixture(scope="session")
def template(tmp_path_factory: Any) -> tuple[Path, dict[tuple[str, str], str]]:
    """A database with the tables and the roles, made once and copied for each test."""
    where = tmp_path_factory.mktemp("linking-template")
    path = where / "linking.db"
    (where / "no-versions").mkdir()
    upgrade(f"sqlite:///{path}", where / "no-versions")  # the kit's own tables: the outbox among them
    database = Database(f"sqlite:///{path}")
    metadata.create_all(database.engine)
    roles = World(database).roles
    database.dispose()  # the last connection closing checkpoints the WAL into the file
    return path, roles


@pytest.fixture
def world(template: tuple[Path, dict[tuple[str, str], str]], tmp_path: Path) -> Iterator[World]:
    path = tmp_path / "linking.db"
    shutil.copyfile(template[0], path)
    database = Database(f"sqlite:///{path}")
    yield World(database, dict(template[1]))
    database.dispose()

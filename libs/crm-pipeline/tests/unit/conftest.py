"""Fast tests of the pipeline's rules: a SQLite file per test with a records service's tables (made
once per session by the service's own migrations, then copied), a catalogue copy fed with catalogue
events, and the domain functions called directly - no HTTP, no Kafka, no PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_world import KINDS, Pipeline

from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings

Template = tuple[Path, dict[str, str]]  # a database file, and the ids of its catalogue and files


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    """Each kind's database as its migrations make it, bare and seeded (once per test session)."""
    where = tmp_path_factory.mktemp("pipeline-templates")
    out: dict[str, Template] = {}
    for name in KINDS:
        path = where / f"{name}.sqlite3"
        settings = load_settings("domain", {"CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": f"sqlite:///{path}",
                                            "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": "x" * 40,
                                            "CRM_LOG_FORMAT": "text"})
        migrate(find_service(name), settings)
        out[f"bare {name}"] = (path, {})
        seeded = where / f"seeded-{name}.sqlite3"
        shutil.copyfile(path, seeded)
        db = Database(f"sqlite:///{seeded}")
        world = Pipeline(KINDS[name], db, {})
        world.seed()
        db.dispose()
        out[name] = (seeded, world.ids)
    return out


def _pipeline(name: str, templates: dict[str, Template], tmp_path: Path) -> Iterator[Pipeline]:
    template, ids = templates[name]
    path = tmp_path / template.name
    shutil.copyfile(template, path)
    db = Database(f"sqlite:///{path}")
    yield Pipeline(KINDS[name.removeprefix("bare ")], db, dict(ids))
    db.dispose()


@pytest.fixture
def leads(templates: dict[str, Template], tmp_path: Path) -> Iterator[Pipeline]:
    yield from _pipeline("leads", templates, tmp_path)


@pytest.fixture
def opportunities(templates: dict[str, Template], tmp_path: Path) -> Iterator[Pipeline]:
    yield from _pipeline("opportunities", templates, tmp_path)


@pytest.fixture
def bare_leads(templates: dict[str, Template], tmp_path: Path) -> Iterator[Pipeline]:
    """The leads service with an empty catalogue copy."""
    yield from _pipeline("bare leads", templates, tmp_path)

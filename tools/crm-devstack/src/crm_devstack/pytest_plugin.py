"""pytest fixtures for real infrastructure: a Kafka broker and a PostgreSQL cluster per session.

Loaded for the whole tree by the root pyproject (``-p crm_devstack.pytest_plugin``). When
Kafka or PostgreSQL cannot start, the session stops at once with the reason: nothing is
skipped and nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_devstack.errors import DevstackError
from crm_devstack.kafka import KafkaBroker, ensure_kafka_jars
from crm_devstack.platform import Platform, start_platform
from crm_devstack.postgres import PostgresCluster

KAFKA_START_TIMEOUT = 180.0  # seconds; see the kafka fixture


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that runs on PostgreSQL is an ``integration`` test, whether it says so or runs on
    both databases (``any_db_url``): `make test-fast` runs its SQLite half only."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("any_db_url") == "postgresql":
            item.add_marker(pytest.mark.integration)


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Makefile").exists() and (parent / "services").is_dir():
            return parent
    return Path.cwd()


def _infrastructure_failed(what: str, exc: BaseException) -> None:
    # Every test that needs it errors with this message (pytest caches a session fixture's
    # failure); the run fails, nothing is skipped.
    pytest.fail(f"{what} could not start, so this test cannot run (tests never skip):\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node KRaft broker on free loopback ports, from the Maven Central jars."""
    cache = Path(os.environ.get("CRM_KAFKA_CACHE", _repo_root() / ".run" / "kafka-cache"))
    broker = None
    try:
        jars = ensure_kafka_jars(cache)
        broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), jars)
        # Generous: one broker serves the whole session, and when it cannot start every test that
        # needs it errors. On a 2-core box at load 20+ (a bench beside the suite) the JVM's start
        # went past the 60 s default and 2,400 tests errored.
        broker.start(timeout=KAFKA_START_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure ends the session with its message
        if broker is not None:
            broker.stop()
        _infrastructure_failed("Kafka", exc)
    assert broker is not None
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster (initdb into a temporary directory, free port)."""
    cluster = None
    # Not under pytest's tmp dir: that is mode 0700 and the postgres OS user must reach it.
    base = Path(tempfile.mkdtemp(prefix="crm-test-pg-"))
    try:
        cluster = PostgresCluster(base)
        cluster.start()
    except Exception as exc:  # noqa: BLE001
        if cluster is not None:
            cluster.stop()
        _infrastructure_failed("PostgreSQL", exc)
    assert cluster is not None
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A new, empty PostgreSQL database for this test."""
    return postgres.create_database("t_" + uuid.uuid4().hex[:16])


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded default (SQLite) and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database("t_" + uuid.uuid4().hex[:16])


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing one broker never see each other's messages."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def platform_env() -> dict[str, str]:
    """Extra settings for every process of the e2e ``platform`` (override it in a conftest.py,
    e.g. to trust an identity provider's key that a test starts)."""
    return {}


@pytest.fixture(scope="session")
def platform(kafka: KafkaBroker, postgres: PostgresCluster, platform_env: dict[str, str]) -> Iterator[Platform]:
    """The whole platform as `make run` starts it, but on PostgreSQL, on free ports."""
    env = {
        # Keep the e2e processes small: the machine also runs the tests.
        "CRM_WEB_CONCURRENCY": "1",
        # The limiter stays on (its path runs in every e2e request), far above what the
        # suite sends with one token: a fuzzing run sends thousands of requests.
        "CRM_RATE_LIMIT": "100000/second",
        **platform_env,
    }
    try:
        running = start_platform(kafka, postgres, db_prefix="e2e", env=env)
    except DevstackError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield running
    keep = bool(os.environ.get("CRM_E2E_KEEP"))
    running.stop(keep_logs=keep)
    if keep:  # keep the processes' logs for a post-mortem
        print(f"\ne2e platform logs kept in {running.config.logs_dir}")

"""pytest fixtures for real infrastructure: a Kafka broker and a PostgreSQL cluster per session.

Loaded for the whole tree by the root pyproject (``-p crm_devstack.pytest_plugin``). When
Kafka or PostgreSQL cannot start, the session stops at once with the reason: nothing is
skipped and nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_devstack.errors import DevstackError
from crm_devstack.kafka import KafkaBroker, ensure_kafka_jars
from crm_devstack.ports import free_port
from crm_devstack.postgres import PostgresCluster
from crm_devstack.stack import ALL_SERVICES, GATEWAY, SERVICES, StackConfig, make_token, service_env
from crm_devstack.supervisor import ProcessGroup, wait_http_ok


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
        broker.start()
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


class Platform:
    """Every service (api + worker) on PostgreSQL and the session's broker, plus the gateway."""

    def __init__(self, config: StackConfig, db_urls: dict[str, str], processes: ProcessGroup) -> None:
        self.config = config
        self.db_urls = db_urls
        self.processes = processes

    @property
    def gateway_url(self) -> str:
        return self.config.api_url(GATEWAY)

    def api_url(self, service: str) -> str:
        return self.config.api_url(service)

    def token(self, roles: tuple[str, ...] = ("admin",), user: str = "e2e-user", office: str = "office-1") -> str:
        return make_token(self.config.jwt_secret, user=user, name=f"E2E {user}", office=office, roles=roles)

    def auth(self, roles: tuple[str, ...] = ("admin",), **kw: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(roles, **kw)}"}


@pytest.fixture(scope="session")
def platform(kafka: KafkaBroker, postgres: PostgresCluster) -> Iterator[Platform]:
    """The whole platform as `make run` starts it, but on PostgreSQL, on free ports."""
    root = Path(tempfile.mkdtemp(prefix="crm-e2e-"))
    config = StackConfig(
        root=root,
        api_ports={name: free_port() for name in ALL_SERVICES},
        worker_ports={name: free_port() for name in SERVICES},
        kafka_port=kafka.port,
        kafka_controller_port=kafka.controller_port,
        jwt_secret="e2e-secret-long-enough-for-hs256-signatures",  # noqa: S106 - test-only
        service_bin=Path(sys.prefix) / "bin" / "crm-service",
        kafka_cache=root / "unused",
    )
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    db_urls = {name: postgres.create_database(f"e2e_{name}") for name in SERVICES}
    group = ProcessGroup()

    def env_for(name: str, role: str) -> dict[str, str]:
        env = service_env(config, name, role)
        if name in db_urls:
            env["CRM_DATABASE_URL"] = db_urls[name]
        # Keep the e2e processes small: the machine also runs the tests.
        env["CRM_WEB_CONCURRENCY"] = "1"
        # The limiter stays on (its path runs in every e2e request), far above what the
        # suite sends with one token: a fuzzing run sends thousands of requests.
        env["CRM_RATE_LIMIT"] = "100000/second"
        return env

    try:
        for name in SERVICES:
            done = subprocess.run([str(config.service_bin), name, "migrate"], env=env_for(name, "migrate"),
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise DevstackError(f"migrations of {name} failed:\n{done.stderr[-3000:]}")
        for name in SERVICES:
            group.add(f"{name}-api", [str(config.service_bin), name, "api", "--bind",
                                      f"127.0.0.1:{config.api_ports[name]}"],
                      env_for(name, "api"), config.log_path(f"{name}-api"))
            group.add(f"{name}-worker", [str(config.service_bin), name, "worker"], env_for(name, "worker"),
                      config.log_path(f"{name}-worker"))
        group.add("gateway-api", [str(config.service_bin), GATEWAY, "api", "--bind",
                                  f"127.0.0.1:{config.api_ports[GATEWAY]}"],
                  env_for(GATEWAY, "api"), config.log_path("gateway-api"))
        wait_http_ok(f"{config.api_url(GATEWAY)}/readyz", timeout=120, check=group.check)
    except Exception as exc:  # noqa: BLE001
        logs = "\n".join(f"--- {n}:\n{group.log_tail(n, 15)}" for n in group.pids())
        group.stop_all()
        pytest.fail(f"the platform could not start: {exc}\n{logs}", pytrace=False)
    yield Platform(config, db_urls, group)
    group.stop_all()
    if os.environ.get("CRM_E2E_KEEP"):  # keep the processes' logs for a post-mortem
        print(f"\ne2e platform logs kept in {config.logs_dir}")
    else:
        shutil.rmtree(root, ignore_errors=True)

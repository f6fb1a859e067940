"""Fixtures of the Kafka kit's tests: the test topic on the session's broker, and a PostgreSQL
server of a test's own (to stop it)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_roles import TOPIC

from crm_devstack.postgres import PostgresCluster
from crm_kafka.topics import ensure_topics


@pytest.fixture(scope="module")
def bootstrap(kafka) -> str:
    ensure_topics(kafka.bootstrap, [TOPIC])
    return kafka.bootstrap


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster this test alone uses: it stops the server."""
    base = Path(tempfile.mkdtemp(prefix="crm-kafka-outage-pg-"))
    cluster = PostgresCluster(base)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)

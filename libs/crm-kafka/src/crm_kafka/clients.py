"""librdkafka configuration for the platform's producers, consumers and admin clients."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient


def base_config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings every client shares; ``extra`` (CRM_KAFKA_EXTRA) carries SASL/TLS."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "client.id": "crm"}
    config.update(extra or {})
    return config


def idempotent_producer(bootstrap: str, extra: dict[str, Any] | None = None, **overrides: Any) -> Producer:
    """A producer that never duplicates or reorders within a partition on its own retries."""
    config = base_config(bootstrap, extra)
    config.update({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,  # a batch of one is fine: the relay already batches
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
    })
    config.update(overrides)
    return Producer(config)


def consumer_config(bootstrap: str, group_id: str, extra: dict[str, Any] | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """Manual offset commits (after the database commit), earliest reset, fast rebalances."""
    config = base_config(bootstrap, extra)
    config.update({
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        "isolation.level": "read_committed",
        # The broker holds an empty fetch this long; a message for a partition that is not in the
        # fetch in flight waits it out. librdkafka's 500 ms default gave ~12 % of trigger actions
        # 1-3.6 s of delay; 50 ms brings the p99 under 0.4 s for ~0.04 idle cores (`make bench`).
        "fetch.wait.max.ms": 50,
    })
    config.update(overrides)
    return config


def admin_client(bootstrap: str, extra: dict[str, Any] | None = None) -> AdminClient:
    return AdminClient(base_config(bootstrap, extra))


def kafka_ready_check(bootstrap: str, extra: dict[str, Any] | None = None, timeout: float = 2.0) -> Any:
    """A readiness check (callable) that raises when the cluster's metadata cannot be read."""
    clients: list[AdminClient] = []  # created on first use: building an app must not dial Kafka

    def check() -> None:
        if not clients:
            clients.append(admin_client(bootstrap, extra))
        clients[0].list_topics(timeout=timeout)

    return check

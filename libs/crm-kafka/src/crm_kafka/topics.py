"""Create the registered topics (and their DLQs) at start; existing ones are left alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from crm_kafka.clients import admin_client

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, names: Iterable[str] | None = None, *, partitions: int | None = None,
                  replication: int = 1, extra: dict[str, Any] | None = None, timeout: float = 30.0) -> list[str]:
    """Create every registered topic in ``names`` (default: all) and its DLQ if missing.

    ``partitions`` overrides the registry's count for main topics (DLQs keep theirs).
    Returns the names created. Safe to call from several processes at once.
    """
    from crm_events import topics as registry

    wanted = []
    selected = set(names) if names is not None else None
    for topic in registry.all_topics(include_dlq=True):
        base = topic.name[:-4] if topic.name.endswith(".dlq") else topic.name
        if selected is not None and base not in selected:
            continue
        count = topic.partitions
        if partitions and not topic.name.endswith(".dlq"):
            count = partitions
        wanted.append(NewTopic(topic.name, num_partitions=count, replication_factor=replication,
                               config=dict(topic.config)))
    client = admin_client(bootstrap, extra)
    existing = set(client.list_topics(timeout=timeout).topics)
    missing = [t for t in wanted if t.topic not in existing]
    created = []
    if missing:
        for name, future in client.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        log.info("created topics", extra={"topics": created})
    return created

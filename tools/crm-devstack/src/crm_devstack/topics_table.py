"""``make topics-table``: the README's table of who publishes and who reads which topic.

Generated, not written: the publishing side comes from the topic registry
(``crm_events.topics``: each topic's owner), the reading side from each service's worker
plan (its consumer groups and their topics, as the worker runs them). A test fails when
the README's copy is stale, and another checks the registry's ``readers`` against the
plans, so the three cannot drift.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from crm_devstack.chaos.observe import consumer_groups
from crm_devstack.stack import SERVICES
from crm_events.topics import all_topics
from crm_kit.settings import Settings, load_settings


def plan_settings(service: str, scratch: Path) -> Settings:
    """Settings that build a service's app (and so its worker plan) without connecting anywhere."""
    return load_settings("domain", {
        "CRM_SERVICE_NAME": service, "CRM_DATABASE_URL": f"sqlite:///{scratch}/{service}.sqlite3",
        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": "x" * 40, "CRM_LOG_FORMAT": "text",
        "CRM_WEBHOOK_SECRETS_KEY": "only-to-build-the-plans",
        "CRM_ATTACHMENTS_DIR": str(scratch / "files")})


def markdown_table() -> str:
    """One row per domain service: the topics it publishes, and each consumer group with its topics."""
    lines = ["| service | publishes | consumer group: topics it reads |", "| --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as scratch:
        for service in SERVICES:
            published = [t.name for t in all_topics(include_dlq=False) if t.owner == service]
            groups = consumer_groups(service, plan_settings(service, Path(scratch)))
            reads = "<br>".join(f"`{group}`: {', '.join(f'`{t}`' for t in topics)}"
                                for group, topics in groups.items())
            lines.append(f"| `{service}` | {', '.join(f'`{t}`' for t in published) or '-'} | {reads or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - used by `make topics-table`
    print(markdown_table())

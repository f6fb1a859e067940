"""Write the chart's topic list (charts/crm-platform/files/topics.yaml) from the topic registry.

The chart renders Strimzi ``KafkaTopic`` resources from that file; the registry
(``crm_events.topics``) is what the services create and use, so the file is generated, committed,
and a test fails when it is stale. Regenerate with:

    .venv/bin/python charts/generate_kafka_topics.py          # write the file
    .venv/bin/python charts/generate_kafka_topics.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from crm_events import topics as registry

TOPICS_FILE = Path(__file__).resolve().parent / "crm-platform" / "files" / "topics.yaml"
HEADER = (
    "# Generated from the topic registry (crm_events.topics) by charts/generate_kafka_topics.py: do not edit.\n"
    "# Main topics take the chart's kafka.topicPartitions; dead-letter topics keep their partitions.\n"
)


def topic_entries() -> list[dict[str, Any]]:
    """Every registered topic, dead-letter topics included, as the chart reads them."""
    return [
        {
            "name": topic.name,
            "owner": topic.owner,
            "dlq": topic.is_dlq,
            "partitions": topic.partitions,
            "config": dict(sorted(topic.config.items())),
        }
        for topic in registry.all_topics(include_dlq=True)
    ]


def render() -> str:
    """The file's whole text."""
    return HEADER + yaml.safe_dump({"topics": topic_entries()}, sort_keys=False, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the file differs from the registry")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TOPICS_FILE.read_text(encoding="utf-8") if TOPICS_FILE.exists() else ""
        if current != text:
            print(f"{TOPICS_FILE} is stale: run .venv/bin/python charts/generate_kafka_topics.py", file=sys.stderr)
            return 1
        return 0
    TOPICS_FILE.parent.mkdir(parents=True, exist_ok=True)
    TOPICS_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {TOPICS_FILE} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

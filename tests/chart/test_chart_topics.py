"""The chart's KafkaTopic resources are the topic registry the services use (crm_events.topics):
the generated topic file is fresh, and what Strimzi would create is what the workers would create."""

from __future__ import annotations

import subprocess
import sys

import yaml
from chartkit import CHART, REPO, Renderer

from crm_events import topics as registry

GENERATOR = REPO / "charts" / "generate_kafka_topics.py"


def test_the_topic_file_is_generated_from_the_registry() -> None:
    out = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    listed = yaml.safe_load((CHART / "files" / "topics.yaml").read_text(encoding="utf-8"))["topics"]
    assert [t["name"] for t in listed] == [t.name for t in registry.all_topics(include_dlq=True)]


def test_kafka_topics_match_the_registry(render: Renderer) -> None:
    rendered = render(CHART / "ci" / "production-values.yaml")
    kafka = rendered.values["kafka"]
    resources = {doc["spec"]["topicName"]: doc for doc in rendered.of_kind("KafkaTopic")}
    assert set(resources) == set(registry.TOPICS), "every registered topic, dead-letter topics included"
    for name, doc in resources.items():
        topic = registry.get(name)
        # Main topics take kafka.topicPartitions, as the workers do with CRM_TOPIC_PARTITIONS.
        expected_partitions = topic.partitions if topic.is_dlq else kafka["topicPartitions"]
        assert doc["spec"]["partitions"] == expected_partitions, name
        assert doc["spec"]["replicas"] == kafka["topicReplication"], name
        assert doc["spec"].get("config", {}) == topic.config, name
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == kafka["strimziTopics"]["clusterName"]
        assert doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_topics_are_left_to_the_workers_by_default(render: Renderer) -> None:
    assert render().of_kind("KafkaTopic") == []

"""The topic registry: every topic has a DLQ, a real schema and a working example."""

from __future__ import annotations

import re

import pytest
from google.protobuf.message import Message

from crm_events import topics
from crm_events.envelope import decode, encode, payload_of

MAIN_TOPICS = {
    "crm.catalogue.v1": "catalogue",
    "crm.leads.v1": "leads",
    "crm.opportunities.v1": "opportunities",
    "crm.linking.v1": "linking",
    "crm.triggers.v1": "triggers",
    "crm.leads.commands.v1": "triggers",
    "crm.opportunities.commands.v1": "triggers",
    "crm.test.v1": "kit-tests",
}
DAY_MS = 24 * 60 * 60 * 1000
ALL_NAMES = [topic.name for topic in topics.all_topics()]


def test_the_registry_holds_the_main_topics_and_their_dlqs() -> None:
    main = {topic.name: topic.owner for topic in topics.all_topics(include_dlq=False)}
    assert main == MAIN_TOPICS
    assert set(topics.TOPICS) == set(MAIN_TOPICS) | {f"{name}.dlq" for name in MAIN_TOPICS}
    assert ALL_NAMES == sorted(ALL_NAMES)


@pytest.mark.parametrize("name", sorted(MAIN_TOPICS))
def test_every_main_topic_has_a_registered_dlq(name: str) -> None:
    topic = topics.get(name)
    assert topic.partitions == 3
    assert not topic.is_dlq
    assert topic.dlq is not None
    assert topic.dlq.name == topics.dlq_name(name) == f"{name}.dlq"
    assert topics.get(topic.dlq.name) is topic.dlq
    assert topic.dlq.partitions == 1
    assert topic.dlq.config == {
        "cleanup.policy": "delete",
        "retention.ms": str(14 * DAY_MS),
    }
    assert topic.dlq.dlq is None
    assert topic.dlq.is_dlq
    assert topic.dlq.schema == topic.schema
    assert topic.dlq.key == topic.key


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_topic_has_a_schema_that_resolves(name: str) -> None:
    topic = topics.get(name)
    cls = topic.message_class()
    assert issubclass(cls, Message)
    assert cls.DESCRIPTOR.full_name == topic.schema == "crm.events.v1.Envelope"
    assert topic.key == "aggregate_id"
    assert topic.key in cls.DESCRIPTOR.fields_by_name
    assert topic.owner
    assert topic.description
    assert topic.config.get("cleanup.policy") in {"compact", "delete"}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_topic_example_round_trips(name: str) -> None:
    topic = topics.get(name)
    example = topics.example_envelope(name)
    assert isinstance(example, topic.message_class())

    decoded = decode(encode(example))

    assert decoded == example
    payload = payload_of(decoded)
    assert payload is not None
    assert payload == payload_of(example)
    assert getattr(decoded, topic.key), "the example needs a Kafka key"
    assert decoded.producer
    # "<aggregate>.<what>" or deeper ("catalogue.stage.created"): lowercase dotted words
    assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", decoded.event_type), decoded.event_type


@pytest.mark.parametrize("name", sorted(MAIN_TOPICS))
def test_examples_are_golden(name: str) -> None:
    # Fixed ids and times: the same bytes on every run.
    assert encode(topics.example_envelope(name)) == encode(topics.example_envelope(name))


def test_examples_carry_the_payload_of_their_topic() -> None:
    assert topics.example_envelope("crm.catalogue.v1").WhichOneof("payload") == "catalogue_entry"
    assert topics.example_envelope("crm.leads.v1").record.kind == "lead"
    assert topics.example_envelope("crm.opportunities.v1").record.kind == "opportunity"
    assert topics.example_envelope("crm.test.v1").WhichOneof("payload") == "probe"


def test_a_dlq_example_is_its_topics_example() -> None:
    assert topics.example_envelope("crm.leads.v1.dlq") == topics.example_envelope("crm.leads.v1")


def test_topic_settings() -> None:
    day = str(DAY_MS)
    assert topics.get("crm.catalogue.v1").config == {"cleanup.policy": "compact"}
    assert topics.get("crm.triggers.v1").config["retention.ms"] == str(7 * DAY_MS)
    assert topics.get("crm.test.v1").config["retention.ms"] == day


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(KeyError, match="crm.nope.v1"):
        topics.get("crm.nope.v1")
    with pytest.raises(KeyError):
        topics.example_envelope("crm.nope.v1")
    with pytest.raises(ValueError, match="DLQ already"):
        topics.dlq_name("crm.leads.v1.dlq")
    with pytest.raises(KeyError, match="crm.events.v1.Nope"):
        topics.message_class("crm.events.v1.Nope")


def test_topics_are_hashable() -> None:
    assert len(set(topics.all_topics())) == len(topics.TOPICS)

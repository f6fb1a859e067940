"""The topic registry: every Kafka topic of the platform, its DLQ included.

Each topic names its owner (the service that writes it), the envelope field used
as the Kafka key, the protobuf message its values are, its partition count and
topic settings. Every main topic has an example message (``example_envelope``)
that the contract tests encode and decode; charts can render ``KafkaTopic``
resources from ``all_topics()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.linking_pb2 import LinkingChange
from crm.events.v1.probe_pb2 import Probe
from crm.events.v1.records_pb2 import PipelineRecord, RecordCommand
from crm_events.envelope import new_envelope

__all__ = [
    "AGGREGATE_KEY",
    "CATALOGUE",
    "LEADS",
    "LEADS_COMMANDS",
    "LINKING",
    "OPPORTUNITIES",
    "OPPORTUNITIES_COMMANDS",
    "PROBES",
    "RECORD_TOPICS",
    "TRIGGERS",
    "DLQ_SUFFIX",
    "ENVELOPE_SCHEMA",
    "TOPICS",
    "Topic",
    "all_topics",
    "dlq_name",
    "example_envelope",
    "get",
    "message_class",
    "sources_of",
]

ENVELOPE_SCHEMA = "crm.events.v1.Envelope"
AGGREGATE_KEY = "aggregate_id"
DLQ_SUFFIX = ".dlq"

# The topics by name: code names a topic only through these (or ``get``/``all_topics``), never a literal.
CATALOGUE = "crm.catalogue.v1"
LEADS = "crm.leads.v1"
OPPORTUNITIES = "crm.opportunities.v1"
LINKING = "crm.linking.v1"
TRIGGERS = "crm.triggers.v1"
LEADS_COMMANDS = "crm.leads.commands.v1"
OPPORTUNITIES_COMMANDS = "crm.opportunities.commands.v1"
PROBES = "crm.test.v1"
# Every lead and opportunity event carries the record after the change: what record read models follow.
RECORD_TOPICS: tuple[str, ...] = (LEADS, OPPORTUNITIES)

_DAY_MS = 24 * 60 * 60 * 1000
MAIN_PARTITIONS = 3
DLQ_PARTITIONS = 1
DLQ_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(14 * _DAY_MS)}


@dataclass(frozen=True)
class Topic:
    """One Kafka topic and how it is used.

    ``key`` names the Envelope field whose value is the Kafka key; ``schema`` is
    the fully qualified protobuf message of the values; ``dlq`` is the topic
    that consumers send messages they gave up on to (``None`` for a DLQ).
    """

    name: str
    owner: str
    key: str
    schema: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""
    dlq: Topic | None = None
    # The services that keep a read model of this topic (their worker plans must agree; a test
    # checks). A client's consistency token makes them wait for its writes - unless the topic
    # carries asynchronous commands (trigger actions), which no token covers.
    readers: tuple[str, ...] = ()
    asynchronous: bool = False

    def __hash__(self) -> int:  # config is a dict; names are unique
        return hash(self.name)

    @property
    def is_dlq(self) -> bool:
        """Whether this topic is a dead-letter queue."""
        return self.name.endswith(DLQ_SUFFIX)

    def message_class(self) -> type[Message]:
        """The generated class of this topic's messages."""
        return message_class(self.schema)


def message_class(full_name: str) -> type[Message]:
    """Resolve a fully qualified message name to its generated class.

    Raises ``KeyError`` for a name no imported contract defines.
    """
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        msg = f"no protobuf message named {full_name!r}"
        raise KeyError(msg) from None
    return message_factory.GetMessageClass(descriptor)


def dlq_name(name: str) -> str:
    """The dead-letter topic of ``name``: ``<name>.dlq``. A DLQ has no DLQ of its own."""
    if name.endswith(DLQ_SUFFIX):
        msg = f"{name} is a DLQ already"
        raise ValueError(msg)
    return f"{name}{DLQ_SUFFIX}"


def _main_topic(name: str, owner: str, config: dict[str, str], description: str, *,
                readers: tuple[str, ...] = (), asynchronous: bool = False) -> Topic:
    dlq = Topic(
        name=dlq_name(name),
        owner=owner,
        key=AGGREGATE_KEY,
        schema=ENVELOPE_SCHEMA,
        partitions=DLQ_PARTITIONS,
        config=dict(DLQ_CONFIG),
        description=(
            f"Dead letters of {name}: messages a consumer gave up on after bounded "
            "retries, unchanged, with their origin and the error in headers."
        ),
    )
    return Topic(
        name=name,
        owner=owner,
        key=AGGREGATE_KEY,
        schema=ENVELOPE_SCHEMA,
        partitions=MAIN_PARTITIONS,
        config=config,
        description=description,
        dlq=dlq,
        readers=readers,
        asynchronous=asynchronous,
    )


def _delete_after(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


_MAIN_TOPICS = [
    _main_topic(
        CATALOGUE,
        "catalogue",
        {"cleanup.policy": "compact"},
        "Catalogue entries (stages, stage groups and other reference tables) of "
        "both pipelines, each message the complete entry after a change. Compacted: "
        "the latest message per key (aggregate_id = the entry id) is the entry's "
        "current state; a deletion is an entry with deleted = true.",
        readers=("leads", "opportunities", "linking", "triggers"),
    ),
    _main_topic(
        LEADS,
        "leads",
        _delete_after(30),
        "Lead events (created, changed, stage changed, converted, deleted), each "
        "carrying the lead as it is after the change; key = the lead id.",
        readers=("catalogue", "opportunities", "linking", "triggers", "webhooks"),
    ),
    _main_topic(
        OPPORTUNITIES,
        "opportunities",
        _delete_after(30),
        "Opportunity events, each carrying the opportunity as it is after the change; key = the opportunity id.",
        readers=("catalogue", "leads", "linking", "triggers", "webhooks"),
    ),
    _main_topic(
        LINKING,
        "linking",
        _delete_after(30),
        "Events of the links between records; key = the link's aggregate id.",
        readers=("leads", "opportunities", "webhooks"),
    ),
    _main_topic(
        TRIGGERS,
        "triggers",
        _delete_after(7),
        "Events of the triggers service (trigger definitions and executions).",
    ),
    _main_topic(
        LEADS_COMMANDS,
        "triggers",
        _delete_after(7),
        "Commands from triggers to the leads service; key = the target lead id. "
        "Each carries a deterministic event_id (trigger, record, causing event), so "
        "a re-fired trigger applies once.",
        readers=("leads",),
        asynchronous=True,
    ),
    _main_topic(
        OPPORTUNITIES_COMMANDS,
        "triggers",
        _delete_after(7),
        "Commands from triggers to the opportunities service; key = the target "
        "opportunity id. Ids are deterministic as on crm.leads.commands.v1.",
        readers=("opportunities",),
        asynchronous=True,
    ),
    _main_topic(
        PROBES,
        "kit-tests",
        _delete_after(1),
        "Probe messages of the Kafka kit's own integration tests and of fault-injection runs; no service consumes it.",
    ),
]

TOPICS: dict[str, Topic] = {}
for _topic in _MAIN_TOPICS:
    TOPICS[_topic.name] = _topic
    if _topic.dlq is not None:
        TOPICS[_topic.dlq.name] = _topic.dlq
del _topic


def get(name: str) -> Topic:
    """The registered topic called ``name``; ``KeyError`` for an unknown name."""
    try:
        return TOPICS[name]
    except KeyError:
        msg = f"unknown topic {name!r}; registered: {', '.join(sorted(TOPICS))}"
        raise KeyError(msg) from None


@functools.cache  # the registry is fixed at import; a record's topic is asked for on every write
def commands_for(owner: str) -> str:
    """The topic of the commands that ``owner`` (leads, opportunities) applies."""
    return next(t.name for t in all_topics(include_dlq=False) if t.asynchronous and t.readers == (owner,))


@functools.cache
def topic_of(owner: str) -> str:
    """The events topic that ``owner`` writes (one per service; commands aside)."""
    return next(t.name for t in all_topics(include_dlq=False) if t.owner == owner and not t.asynchronous)


def all_topics(include_dlq: bool = True) -> list[Topic]:
    """Every registered topic, sorted by name (each DLQ right after its topic)."""
    return sorted(
        (topic for topic in TOPICS.values() if include_dlq or not topic.is_dlq),
        key=lambda topic: topic.name,
    )


# --------------------------------------------------------------------------- examples
# Golden messages: fixed ids and times, so an example is the same on every run.

_EXAMPLE_TIME = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
_EXAMPLE_USER = Actor(user_id="u-1001", name="Ada Example", office_id="office-berlin", kind="user")
_TRIGGER_ACTOR = Actor(kind="trigger:7d0c6f0e-2f7a-4a61-9b0a-3c1e5f2b9d10")


def _pipeline_record(kind: str, record_id: str, stage_id: str, version: int) -> PipelineRecord:
    record = PipelineRecord(
        id=record_id,
        kind=kind,
        title="Fleet renewal for Example GmbH",
        description="Twelve vans, delivery in Q3.",
        owner_id="u-1001",
        office_id="office-berlin",
        stage_id=stage_id,
        stage_group_id="sg-open",
        version=version,
        created_by="u-1001",
        modified_by="u-1001",
    )
    record.created_at.FromDatetime(datetime(2025, 1, 10, 8, 0, tzinfo=UTC))
    record.modified_at.FromDatetime(_EXAMPLE_TIME)
    return record


def _catalogue_example() -> Envelope:
    attributes = Struct()
    attributes.update({"stage_group_id": "sg-open", "is_end": False, "probability": 40})
    entry = CatalogueEntry(
        id="stage-qualified",
        kind="lead",
        entity="stage",
        code="qualified",
        names={"en": "Qualified", "de": "Qualifiziert"},
        index=2,
        active=True,
        deleted=False,
        version=3,
        attributes=attributes,
    )
    return new_envelope(
        "catalogue.entry_changed",
        "catalogue_entry",
        entry.id,
        entry.version,
        entry,
        actor=_EXAMPLE_USER,
        producer="catalogue",
        event_id="0b8c7a52-3d4e-4f6a-9b1c-2d3e4f5a6b01",
        occurred_at=_EXAMPLE_TIME,
    )


def _record_example(kind: str, event_type: str, producer: str) -> Callable[[], Envelope]:
    def build() -> Envelope:
        record = _pipeline_record(kind, f"{kind}-5f1e2d3c", stage_id="stage-qualified", version=4)
        return new_envelope(
            event_type,
            kind,
            record.id,
            record.version,
            record,
            actor=_EXAMPLE_USER,
            correlation_id="c0ffee00-0000-4000-8000-000000000001",
            producer=producer,
            event_id="0b8c7a52-3d4e-4f6a-9b1c-2d3e4f5a6b02",
            occurred_at=_EXAMPLE_TIME,
        )

    return build


def _probe_example(aggregate_id: str, producer: str, *, actor: Actor | None = None) -> Callable[[], Envelope]:
    # Topics whose payload types are not defined yet carry a Probe in their
    # example; the owner replaces it when adding the real payload.
    def build() -> Envelope:
        return new_envelope(
            "probe.sent",
            "probe",
            aggregate_id,
            1,
            Probe(note=f"example for {producer}", sequence=1),
            actor=actor or Actor(kind="system"),
            producer=producer,
            event_id="0b8c7a52-3d4e-4f6a-9b1c-2d3e4f5a6b03",
            occurred_at=_EXAMPLE_TIME,
        )

    return build


def _linking_example() -> Envelope:
    change = LinkingChange(entity="record_contact", id="contact-2b3c:lead-5f1e2d3c", record_kind="lead",
                           record_id="lead-5f1e2d3c", version=1)
    change.data.update({"contact_id": "contact-2b3c", "role_id": "role-main"})
    return new_envelope("linking.contact.linked", "record_contact", change.id, 1, change, actor=_EXAMPLE_USER,
                        producer="linking", event_id="0b8c7a52-3d4e-4f6a-9b1c-2d3e4f5a6b04",
                        occurred_at=_EXAMPLE_TIME)


def _command_example(kind: str) -> Callable[[], Envelope]:
    def build() -> Envelope:
        command = RecordCommand(record_id=f"{kind}-5f1e2d3c", kind=kind, action="set_stage",
                                stage_id="stage-qualified", trigger_id="trigger-7d0c6f0e")
        return new_envelope(f"{kind}.command.set_stage", kind, command.record_id, 0, command,
                            actor=_TRIGGER_ACTOR, producer="triggers", trigger_depth=1,
                            event_id="0b8c7a52-3d4e-4f6a-9b1c-2d3e4f5a6b05", occurred_at=_EXAMPLE_TIME)

    return build


_EXAMPLES: dict[str, Callable[[], Envelope]] = {
    "crm.catalogue.v1": _catalogue_example,
    "crm.leads.v1": _record_example("lead", "lead.stage_changed", "leads"),
    "crm.opportunities.v1": _record_example("opportunity", "opportunity.created", "opportunities"),
    "crm.linking.v1": _linking_example,
    "crm.triggers.v1": _probe_example("trigger-7d0c6f0e", "triggers"),
    "crm.leads.commands.v1": _command_example("lead"),
    "crm.opportunities.commands.v1": _command_example("opportunity"),
    "crm.test.v1": _probe_example("probe-1", "kit-tests"),
}


def example_envelope(topic_name: str) -> Envelope:
    """A fresh example message of ``topic_name`` (a DLQ's example is its topic's).

    ``KeyError`` for an unregistered topic.
    """
    topic = get(topic_name)
    origin = topic.name.removesuffix(DLQ_SUFFIX) if topic.is_dlq else topic.name
    return _EXAMPLES[origin]()


@functools.cache  # the registry is fixed at import; the gateway asks on every request
def sources_of(service: str) -> dict[str, list[str]]:
    """The services whose events ``service`` keeps read models of, each with those topics;
    topics of asynchronous commands are left out (no consistency token covers them)."""
    sources: dict[str, list[str]] = {}
    for topic in all_topics(include_dlq=False):
        if service in topic.readers and not topic.asynchronous and topic.owner != service:
            sources.setdefault(topic.owner, []).append(topic.name)
    return sources

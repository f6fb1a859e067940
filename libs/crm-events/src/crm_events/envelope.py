"""Build, encode and decode the event envelope, ``crm.events.v1.Envelope``.

Every Kafka message of the platform is one encoded Envelope; its key is the
envelope's ``aggregate_id`` (see ``crm_events.topics``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.records_pb2 import PipelineRecord

__all__ = [
    "CONTENT_TYPE",
    "ENVELOPE_MESSAGE_TYPE",
    "PAYLOAD_ONEOF",
    "Actor",
    "Envelope",
    "EnvelopeDecodeError",
    "decode",
    "encode",
    "headers_for",
    "new_envelope",
    "payload_field_for",
    "payload_of",
    "to_dict",
]

ENVELOPE_MESSAGE_TYPE = Envelope.DESCRIPTOR.full_name
CONTENT_TYPE = f"application/x-protobuf; messageType={ENVELOPE_MESSAGE_TYPE}"
PAYLOAD_ONEOF = "payload"

# Message full name -> name of the Envelope field that carries it.
_PAYLOAD_FIELDS: dict[str, str] = {
    field.message_type.full_name: field.name
    for field in Envelope.DESCRIPTOR.oneofs_by_name[PAYLOAD_ONEOF].fields
    if field.message_type is not None
}


class EnvelopeDecodeError(ValueError):
    """The bytes are not a usable Envelope (garbage, a tombstone, or incomplete)."""


def payload_field_for(payload_message: Message) -> str:
    """Return the name of the ``payload`` oneof field that carries this message type.

    Raises ``TypeError`` when the envelope has no field for it.
    """
    full_name = getattr(getattr(payload_message, "DESCRIPTOR", None), "full_name", None)
    if not isinstance(payload_message, Message) or full_name not in _PAYLOAD_FIELDS:
        known = ", ".join(sorted(_PAYLOAD_FIELDS))
        msg = f"{type(payload_message).__name__} is not an envelope payload type; known: {known}"
        raise TypeError(msg)
    return _PAYLOAD_FIELDS[full_name]


def new_envelope(
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    aggregate_version: int,
    payload_message: Message,
    *,
    actor: Actor | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    trigger_depth: int = 0,
    producer: str = "",
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Build an envelope around ``payload_message`` (copied into the ``payload`` oneof).

    ``event_id`` defaults to a new UUID4 string and ``occurred_at`` to now (UTC);
    an explicit ``occurred_at`` must be timezone-aware. ``correlation_id`` and
    ``causation_id`` default to empty: the outbox fills the correlation id from
    the request or event being handled. Raises ``TypeError`` for a payload type the envelope
    does not carry and ``ValueError`` for an empty ``event_type`` or
    ``aggregate_id``, an ``event_id`` that is not a UUID, a naive
    ``occurred_at`` or a negative ``trigger_depth``.
    """
    payload_field = payload_field_for(payload_message)
    if event_id is None:
        event_id = str(uuid.uuid4())
    if occurred_at is None:
        occurred_at = datetime.now(UTC)
    elif occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
        msg = "occurred_at must be timezone-aware"
        raise ValueError(msg)
    if trigger_depth < 0:
        msg = f"trigger_depth must not be negative, got {trigger_depth}"
        raise ValueError(msg)

    envelope = Envelope(
        event_id=event_id,
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        correlation_id=correlation_id or "",
        causation_id=causation_id or "",
        trigger_depth=trigger_depth,
        producer=producer,
    )
    envelope.occurred_at.FromDatetime(occurred_at)
    if actor is not None:
        envelope.actor.CopyFrom(actor)
    getattr(envelope, payload_field).CopyFrom(payload_message)
    problems = _problems(envelope)
    if problems:
        raise ValueError("; ".join(problems))
    return envelope


def _problems(envelope: Envelope) -> list[str]:
    """What makes an envelope unusable; consumers need these to deduplicate and key."""
    problems = [
        f"{name} is empty" for name in ("event_id", "event_type", "aggregate_id") if not getattr(envelope, name)
    ]
    if envelope.event_id:
        try:
            uuid.UUID(envelope.event_id)
        except ValueError:
            problems.append(f"event_id {envelope.event_id!r} is not a UUID")
    return problems


def encode(env: Envelope) -> bytes:
    """Serialise an envelope for Kafka.

    Raises ``ValueError`` for an envelope that ``decode`` would reject, so a bad
    message fails at the producer instead of in every consumer.
    """
    problems = _problems(env)
    if problems:
        msg = f"cannot encode the envelope: {'; '.join(problems)}"
        raise ValueError(msg)
    return env.SerializeToString(deterministic=True)


def decode(data: bytes | bytearray | memoryview | None) -> Envelope:
    """Parse a Kafka message value into an envelope.

    Raises ``EnvelopeDecodeError`` for bytes that are not an Envelope, for
    ``None`` (a tombstone) and for an envelope without ``event_id`` (a UUID),
    ``event_type`` or ``aggregate_id``. A payload type this code does not know
    (added by a newer producer) is not an error: the oneof is then unset and
    ``payload_of`` returns ``None``.
    """
    if data is None:
        msg = "the message has no value (a tombstone?)"
        raise EnvelopeDecodeError(msg)
    if not isinstance(data, bytes | bytearray | memoryview):
        msg = f"expected bytes, got {type(data).__name__}"
        raise EnvelopeDecodeError(msg)
    envelope = Envelope()
    try:
        envelope.ParseFromString(bytes(data))
    except DecodeError as exc:
        msg = f"not a {ENVELOPE_MESSAGE_TYPE}: {exc}"
        raise EnvelopeDecodeError(msg) from exc
    problems = _problems(envelope)
    if problems:
        msg = f"incomplete {ENVELOPE_MESSAGE_TYPE}: {'; '.join(problems)}"
        raise EnvelopeDecodeError(msg)
    return envelope


def payload_of(env: Envelope) -> Message | None:
    """Return the message set in the ``payload`` oneof, or ``None`` if none is set."""
    field_name = env.WhichOneof(PAYLOAD_ONEOF)
    if field_name is None:
        return None
    payload: Message = getattr(env, field_name)
    return payload


def record_state(env: Envelope) -> PipelineRecord | None:
    """The lead or opportunity an event carries, after its change, whatever the event type.

    ``record`` (created, updated), ``stage_changed``, ``group_changed`` and, for
    ``lead.converted``, the lead; None for events that carry no record state.
    """
    field_name = env.WhichOneof(PAYLOAD_ONEOF)
    if field_name == "record":
        return env.record
    if field_name in ("stage_changed", "group_changed"):
        return getattr(env, field_name).record
    if field_name == "lead_converted":
        return env.lead_converted.lead
    return None


def headers_for(env: Envelope) -> list[tuple[str, bytes]]:
    """Kafka headers for an envelope: ids for logs and routing without decoding."""
    return [
        ("event_id", env.event_id.encode()),
        ("event_type", env.event_type.encode()),
        ("correlation_id", env.correlation_id.encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]


def to_dict(env: Envelope) -> dict[str, Any]:
    """A JSON-friendly dict of the envelope (proto field names; unset fields left out).

    Follows the protobuf JSON mapping: 64-bit integers are strings and
    timestamps RFC 3339 strings.
    """
    return json_format.MessageToDict(env, preserving_proto_field_name=True)

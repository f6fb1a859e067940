"""Envelope helpers: building, encoding, decoding, headers, dicts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.probe_pb2 import Probe
from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_events.envelope import (
    CONTENT_TYPE,
    EnvelopeDecodeError,
    decode,
    encode,
    headers_for,
    new_envelope,
    payload_of,
    to_dict,
)


def _record() -> PipelineRecord:
    return PipelineRecord(id="lead-1", kind="lead", title="Vans", stage_id="s-1", version=2)


def _envelope(payload: Message | None = None, **kwargs: Any) -> Envelope:
    return new_envelope("lead.stage_changed", "lead", "lead-1", 2, payload or _record(), **kwargs)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (PipelineRecord(id="lead-1"), "record"),
        (RecordDeleted(id="lead-1", kind="lead"), "record_deleted"),
        (CatalogueEntry(id="stage-1", names={"en": "New"}), "catalogue_entry"),
        (Probe(note="hello", sequence=7), "probe"),
    ],
)
def test_new_envelope_sets_the_oneof_from_the_payload_type(payload: Message, field: str) -> None:
    env = _envelope(payload)
    assert env.WhichOneof("payload") == field
    assert payload_of(env) == payload


def test_new_envelope_defaults() -> None:
    before = datetime.now(UTC)
    env = _envelope()
    after = datetime.now(UTC)

    assert uuid.UUID(env.event_id).version == 4
    assert before - timedelta(seconds=1) <= env.occurred_at.ToDatetime(UTC) <= after
    assert (env.event_type, env.aggregate_type, env.aggregate_id) == (
        "lead.stage_changed",
        "lead",
        "lead-1",
    )
    assert env.aggregate_version == 2
    assert env.correlation_id == env.causation_id == env.producer == ""
    assert env.trigger_depth == 0
    assert not env.HasField("actor")
    assert _envelope().event_id != env.event_id


def test_new_envelope_takes_everything_explicitly() -> None:
    actor = Actor(user_id="u-1", name="Ada", office_id="o-1", kind="user")
    when = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    event_id = str(uuid.uuid4())

    env = _envelope(
        actor=actor,
        correlation_id="corr-1",
        causation_id="cause-1",
        trigger_depth=2,
        producer="leads",
        event_id=event_id,
        occurred_at=when,
    )

    assert env.actor == actor
    assert (env.correlation_id, env.causation_id) == ("corr-1", "cause-1")
    assert (env.trigger_depth, env.producer, env.event_id) == (2, "leads", event_id)
    assert env.occurred_at.ToDatetime(UTC) == when


def test_new_envelope_copies_the_payload() -> None:
    record = _record()
    env = _envelope(record)
    record.title = "changed later"
    assert env.record.title == "Vans"


@pytest.mark.parametrize(
    "payload",
    [Actor(kind="user"), Envelope(), Timestamp(), {"id": "lead-1"}, None],
    ids=["Actor", "Envelope", "Timestamp", "dict", "None"],
)
def test_new_envelope_rejects_unknown_payload_types(payload: object) -> None:
    with pytest.raises(TypeError, match="not an envelope payload type"):
        new_envelope("lead.created", "lead", "lead-1", 1, payload)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event_id": "not-a-uuid"}, "not a UUID"),
        ({"occurred_at": datetime(2025, 1, 1, 12, 0)}, "timezone-aware"),
        ({"trigger_depth": -1}, "negative"),
    ],
)
def test_new_envelope_rejects_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _envelope(**kwargs)


def test_new_envelope_rejects_an_empty_event_type_or_aggregate_id() -> None:
    with pytest.raises(ValueError, match="event_type is empty"):
        new_envelope("", "lead", "lead-1", 1, _record())
    with pytest.raises(ValueError, match="aggregate_id is empty"):
        new_envelope("lead.created", "lead", "", 1, _record())


def test_encode_decode_round_trip() -> None:
    env = _envelope(actor=Actor(kind="system"), correlation_id="c", producer="leads")
    data = encode(env)
    assert isinstance(data, bytes)
    assert decode(data) == env
    assert decode(bytearray(data)) == env
    assert decode(memoryview(data)) == env


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(EnvelopeDecodeError, ValueError)


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff\xff", b"not a protobuf at all", b"\x0a\x05ab", b"", b"\x00"],
    ids=["invalid-varint", "text", "truncated", "empty", "zero-tag"],
)
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(EnvelopeDecodeError):
        decode(data)


def test_decode_rejects_tombstones_and_non_bytes() -> None:
    with pytest.raises(EnvelopeDecodeError, match="tombstone"):
        decode(None)
    with pytest.raises(EnvelopeDecodeError, match="expected bytes"):
        decode("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("missing", ["event_id", "event_type", "aggregate_id"])
def test_decode_rejects_incomplete_envelopes(missing: str) -> None:
    env = _envelope()
    env.ClearField(missing)
    with pytest.raises(EnvelopeDecodeError, match=f"{missing} is empty"):
        decode(env.SerializeToString())


def test_decode_rejects_a_non_uuid_event_id() -> None:
    env = _envelope()
    env.event_id = "evt-1"
    with pytest.raises(EnvelopeDecodeError, match="not a UUID"):
        decode(env.SerializeToString())


def test_encode_rejects_what_decode_would() -> None:
    env = _envelope()
    env.aggregate_id = ""
    with pytest.raises(ValueError, match="aggregate_id is empty"):
        encode(env)


def test_decode_keeps_a_payload_it_does_not_know() -> None:
    # A newer producer's payload type (an unused oneof number, 98) is not an error.
    env = _envelope()
    env.ClearField("payload")
    data = encode(env) + bytes([0x92, 0x06, 0x02, 0x08, 0x01])  # field 98: {1: 1}

    decoded = decode(data)

    assert payload_of(decoded) is None
    assert decoded.event_id == env.event_id
    assert decoded.SerializeToString().endswith(bytes([0x92, 0x06, 0x02, 0x08, 0x01]))


def test_headers_for() -> None:
    env = _envelope(correlation_id="corr-1")
    assert headers_for(env) == [
        ("event_id", env.event_id.encode()),
        ("event_type", b"lead.stage_changed"),
        ("correlation_id", b"corr-1"),
        ("content-type", b"application/x-protobuf; messageType=crm.events.v1.Envelope"),
    ]
    assert CONTENT_TYPE == "application/x-protobuf; messageType=crm.events.v1.Envelope"


def test_to_dict_is_json_friendly_with_proto_field_names() -> None:
    env = _envelope(occurred_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC), producer="leads")

    data = to_dict(env)

    assert json.loads(json.dumps(data)) == data
    assert data["aggregate_id"] == "lead-1"
    assert data["event_type"] == "lead.stage_changed"
    assert data["occurred_at"] == "2025-03-01T12:00:00Z"
    assert data["record"]["stage_id"] == "s-1"
    assert "aggregateId" not in data


def test_payload_of_an_empty_envelope_is_none() -> None:
    assert payload_of(Envelope()) is None

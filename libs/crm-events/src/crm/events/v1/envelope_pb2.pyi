import datetime

from crm.events.v1 import catalogue_pb2 as _catalogue_pb2
from crm.events.v1 import probe_pb2 as _probe_pb2
from crm.events.v1 import linking_pb2 as _linking_pb2
from crm.events.v1 import records_pb2 as _records_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("event_id", "event_type", "aggregate_type", "aggregate_id", "aggregate_version", "occurred_at", "actor", "correlation_id", "causation_id", "trigger_depth", "producer", "record", "record_deleted", "catalogue_entry", "stage_changed", "group_changed", "lead_converted", "command", "linking_change", "probe")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_DEPTH_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    RECORD_DELETED_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_ENTRY_FIELD_NUMBER: _ClassVar[int]
    STAGE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    GROUP_CHANGED_FIELD_NUMBER: _ClassVar[int]
    LEAD_CONVERTED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    LINKING_CHANGE_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: _timestamp_pb2.Timestamp
    actor: Actor
    correlation_id: str
    causation_id: str
    trigger_depth: int
    producer: str
    record: _records_pb2.PipelineRecord
    record_deleted: _records_pb2.RecordDeleted
    catalogue_entry: _catalogue_pb2.CatalogueEntry
    stage_changed: _records_pb2.StageChanged
    group_changed: _records_pb2.GroupMembershipChanged
    lead_converted: _records_pb2.LeadConverted
    command: _records_pb2.RecordCommand
    linking_change: _linking_pb2.LinkingChange
    probe: _probe_pb2.Probe
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., aggregate_type: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., aggregate_version: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[_Union[Actor, _Mapping]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., trigger_depth: _Optional[int] = ..., producer: _Optional[str] = ..., record: _Optional[_Union[_records_pb2.PipelineRecord, _Mapping]] = ..., record_deleted: _Optional[_Union[_records_pb2.RecordDeleted, _Mapping]] = ..., catalogue_entry: _Optional[_Union[_catalogue_pb2.CatalogueEntry, _Mapping]] = ..., stage_changed: _Optional[_Union[_records_pb2.StageChanged, _Mapping]] = ..., group_changed: _Optional[_Union[_records_pb2.GroupMembershipChanged, _Mapping]] = ..., lead_converted: _Optional[_Union[_records_pb2.LeadConverted, _Mapping]] = ..., command: _Optional[_Union[_records_pb2.RecordCommand, _Mapping]] = ..., linking_change: _Optional[_Union[_linking_pb2.LinkingChange, _Mapping]] = ..., probe: _Optional[_Union[_probe_pb2.Probe, _Mapping]] = ...) -> None: ...

class Actor(_message.Message):
    __slots__ = ("user_id", "name", "office_id", "kind")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFICE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    name: str
    office_id: str
    kind: str
    def __init__(self, user_id: _Optional[str] = ..., name: _Optional[str] = ..., office_id: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

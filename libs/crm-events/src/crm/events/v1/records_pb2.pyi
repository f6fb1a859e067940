import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PipelineRecord(_message.Message):
    __slots__ = ("id", "kind", "title", "description", "owner_id", "office_id", "stage_id", "stage_group_id", "version", "created_at", "created_by", "modified_at", "modified_by", "company_id", "contact_id", "source_id", "priority_id", "category_id", "procedure_id", "attribute_ids", "group_ids", "amount", "currency", "probability", "expected_close_date", "lead_id", "converted_opportunity_id", "stage_changed_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    OFFICE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_BY_FIELD_NUMBER: _ClassVar[int]
    COMPANY_ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    PROCEDURE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_IDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLOSE_DATE_FIELD_NUMBER: _ClassVar[int]
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERTED_OPPORTUNITY_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    title: str
    description: str
    owner_id: str
    office_id: str
    stage_id: str
    stage_group_id: str
    version: int
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    modified_at: _timestamp_pb2.Timestamp
    modified_by: str
    company_id: str
    contact_id: str
    source_id: str
    priority_id: str
    category_id: str
    procedure_id: str
    attribute_ids: _containers.RepeatedScalarFieldContainer[str]
    group_ids: _containers.RepeatedScalarFieldContainer[str]
    amount: str
    currency: str
    probability: int
    expected_close_date: str
    lead_id: str
    converted_opportunity_id: str
    stage_changed_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., owner_id: _Optional[str] = ..., office_id: _Optional[str] = ..., stage_id: _Optional[str] = ..., stage_group_id: _Optional[str] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., modified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., modified_by: _Optional[str] = ..., company_id: _Optional[str] = ..., contact_id: _Optional[str] = ..., source_id: _Optional[str] = ..., priority_id: _Optional[str] = ..., category_id: _Optional[str] = ..., procedure_id: _Optional[str] = ..., attribute_ids: _Optional[_Iterable[str]] = ..., group_ids: _Optional[_Iterable[str]] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., probability: _Optional[int] = ..., expected_close_date: _Optional[str] = ..., lead_id: _Optional[str] = ..., converted_opportunity_id: _Optional[str] = ..., stage_changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StageChanged(_message.Message):
    __slots__ = ("record", "from_stage_id", "to_stage_id", "from_stage_group_id", "to_stage_group_id", "cause")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    record: PipelineRecord
    from_stage_id: str
    to_stage_id: str
    from_stage_group_id: str
    to_stage_group_id: str
    cause: str
    def __init__(self, record: _Optional[_Union[PipelineRecord, _Mapping]] = ..., from_stage_id: _Optional[str] = ..., to_stage_id: _Optional[str] = ..., from_stage_group_id: _Optional[str] = ..., to_stage_group_id: _Optional[str] = ..., cause: _Optional[str] = ...) -> None: ...

class GroupMembershipChanged(_message.Message):
    __slots__ = ("record", "group_id")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    record: PipelineRecord
    group_id: str
    def __init__(self, record: _Optional[_Union[PipelineRecord, _Mapping]] = ..., group_id: _Optional[str] = ...) -> None: ...

class LeadConverted(_message.Message):
    __slots__ = ("lead", "opportunity")
    LEAD_FIELD_NUMBER: _ClassVar[int]
    OPPORTUNITY_FIELD_NUMBER: _ClassVar[int]
    lead: PipelineRecord
    opportunity: PipelineRecord
    def __init__(self, lead: _Optional[_Union[PipelineRecord, _Mapping]] = ..., opportunity: _Optional[_Union[PipelineRecord, _Mapping]] = ...) -> None: ...

class RecordCommand(_message.Message):
    __slots__ = ("record_id", "kind", "action", "stage_id", "group_id", "trigger_id")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    kind: str
    action: str
    stage_id: str
    group_id: str
    trigger_id: str
    def __init__(self, record_id: _Optional[str] = ..., kind: _Optional[str] = ..., action: _Optional[str] = ..., stage_id: _Optional[str] = ..., group_id: _Optional[str] = ..., trigger_id: _Optional[str] = ...) -> None: ...

class RecordDeleted(_message.Message):
    __slots__ = ("id", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

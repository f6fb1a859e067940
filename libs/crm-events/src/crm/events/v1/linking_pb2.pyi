from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkingChange(_message.Message):
    __slots__ = ("entity", "id", "record_kind", "record_id", "data", "deleted", "version")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_KIND_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    entity: str
    id: str
    record_kind: str
    record_id: str
    data: _struct_pb2.Struct
    deleted: bool
    version: int
    def __init__(self, entity: _Optional[str] = ..., id: _Optional[str] = ..., record_kind: _Optional[str] = ..., record_id: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., deleted: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Error(_message.Message):
    __slots__ = ("cls_name", "message", "traceback", "cause")
    CLS_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    cls_name: str
    message: str
    traceback: str
    cause: Error
    def __init__(self, cls_name: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., cause: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("echo",)
    ECHO_FIELD_NUMBER: _ClassVar[int]
    echo: str
    def __init__(self, echo: _Optional[str] = ...) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("echo", "location_name", "loaded", "load_error", "pid")
    ECHO_FIELD_NUMBER: _ClassVar[int]
    LOCATION_NAME_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    LOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    echo: str
    location_name: str
    loaded: bool
    load_error: Error
    pid: int
    def __init__(self, echo: _Optional[str] = ..., location_name: _Optional[str] = ..., loaded: _Optional[bool] = ..., load_error: _Optional[_Union[Error, _Mapping]] = ..., pid: _Optional[int] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSnapshotReply(_message.Message):
    __slots__ = ("snapshot", "error")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    snapshot: LocationSnapshot
    error: Error
    def __init__(self, snapshot: _Optional[_Union[LocationSnapshot, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class LocationSnapshot(_message.Message):
    __slots__ = ("location_name", "repositories")
    LOCATION_NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    location_name: str
    repositories: _containers.RepeatedCompositeFieldContainer[Repository]
    def __init__(self, location_name: _Optional[str] = ..., repositories: _Optional[_Iterable[_Union[Repository, _Mapping]]] = ...) -> None: ...

class Repository(_message.Message):
    __slots__ = ("name", "description", "jobs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("name", "description", "tags", "ops", "edges", "config_schema")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    config_schema: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., config_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Op(_message.Message):
    __slots__ = ("name", "description", "tags", "inputs", "outputs", "config_schema", "has_config_schema")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    HAS_CONFIG_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    inputs: _containers.RepeatedCompositeFieldContainer[OpInput]
    outputs: _containers.RepeatedCompositeFieldContainer[OpOutput]
    config_schema: _struct_pb2.Struct
    has_config_schema: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., inputs: _Optional[_Iterable[_Union[OpInput, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[OpOutput, _Mapping]]] = ..., config_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., has_config_schema: _Optional[bool] = ...) -> None: ...

class OpInput(_message.Message):
    __slots__ = ("name", "type_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    type_name: str
    def __init__(self, name: _Optional[str] = ..., type_name: _Optional[str] = ...) -> None: ...

class OpOutput(_message.Message):
    __slots__ = ("name", "type_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    type_name: str
    def __init__(self, name: _Optional[str] = ..., type_name: _Optional[str] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("from_op", "from_output", "to_op", "to_input")
    FROM_OP_FIELD_NUMBER: _ClassVar[int]
    FROM_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TO_OP_FIELD_NUMBER: _ClassVar[int]
    TO_INPUT_FIELD_NUMBER: _ClassVar[int]
    from_op: str
    from_output: str
    to_op: str
    to_input: str
    def __init__(self, from_op: _Optional[str] = ..., from_output: _Optional[str] = ..., to_op: _Optional[str] = ..., to_input: _Optional[str] = ...) -> None: ...

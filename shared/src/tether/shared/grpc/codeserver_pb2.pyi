import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DefaultStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEFAULT_STATUS_STOPPED: _ClassVar[DefaultStatus]
    DEFAULT_STATUS_RUNNING: _ClassVar[DefaultStatus]

class OverlapPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERLAP_POLICY_ALLOW: _ClassVar[OverlapPolicy]
    OVERLAP_POLICY_SKIP: _ClassVar[OverlapPolicy]
DEFAULT_STATUS_STOPPED: DefaultStatus
DEFAULT_STATUS_RUNNING: DefaultStatus
OVERLAP_POLICY_ALLOW: OverlapPolicy
OVERLAP_POLICY_SKIP: OverlapPolicy

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

class AdoptRequest(_message.Message):
    __slots__ = ("launcher_id",)
    LAUNCHER_ID_FIELD_NUMBER: _ClassVar[int]
    launcher_id: str
    def __init__(self, launcher_id: _Optional[str] = ...) -> None: ...

class AdoptReply(_message.Message):
    __slots__ = ("pid", "location_name", "config_hash", "orphaned", "orphan_grace_s")
    PID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    ORPHANED_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_GRACE_S_FIELD_NUMBER: _ClassVar[int]
    pid: int
    location_name: str
    config_hash: str
    orphaned: bool
    orphan_grace_s: float
    def __init__(self, pid: _Optional[int] = ..., location_name: _Optional[str] = ..., config_hash: _Optional[str] = ..., orphaned: _Optional[bool] = ..., orphan_grace_s: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("name", "description", "jobs", "schedules", "sensors", "partition_sets", "assets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    SENSORS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_SETS_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    sensors: _containers.RepeatedCompositeFieldContainer[Sensor]
    partition_sets: _containers.RepeatedCompositeFieldContainer[PartitionSet]
    assets: _containers.RepeatedCompositeFieldContainer[AssetNode]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ..., sensors: _Optional[_Iterable[_Union[Sensor, _Mapping]]] = ..., partition_sets: _Optional[_Iterable[_Union[PartitionSet, _Mapping]]] = ..., assets: _Optional[_Iterable[_Union[AssetNode, _Mapping]]] = ...) -> None: ...

class AssetNode(_message.Message):
    __slots__ = ("key", "description", "group_name", "metadata", "tags", "owners", "kinds", "code_version", "dependency_keys", "op_name", "job_names", "static_partitions", "time_window_partitions", "io_manager_key")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCY_KEYS_FIELD_NUMBER: _ClassVar[int]
    OP_NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_NAMES_FIELD_NUMBER: _ClassVar[int]
    STATIC_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TIME_WINDOW_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    IO_MANAGER_KEY_FIELD_NUMBER: _ClassVar[int]
    key: _containers.RepeatedScalarFieldContainer[str]
    description: str
    group_name: str
    metadata: _struct_pb2.Struct
    tags: _containers.ScalarMap[str, str]
    owners: _containers.RepeatedScalarFieldContainer[str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    code_version: str
    dependency_keys: _containers.RepeatedCompositeFieldContainer[AssetKeyPath]
    op_name: str
    job_names: _containers.RepeatedScalarFieldContainer[str]
    static_partitions: StaticPartitions
    time_window_partitions: TimeWindowPartitions
    io_manager_key: str
    def __init__(self, key: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., group_name: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., owners: _Optional[_Iterable[str]] = ..., kinds: _Optional[_Iterable[str]] = ..., code_version: _Optional[str] = ..., dependency_keys: _Optional[_Iterable[_Union[AssetKeyPath, _Mapping]]] = ..., op_name: _Optional[str] = ..., job_names: _Optional[_Iterable[str]] = ..., static_partitions: _Optional[_Union[StaticPartitions, _Mapping]] = ..., time_window_partitions: _Optional[_Union[TimeWindowPartitions, _Mapping]] = ..., io_manager_key: _Optional[str] = ...) -> None: ...

class AssetKeyPath(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, path: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("name", "description", "tags", "ops", "edges", "config_schema", "partition_set_name")
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
    PARTITION_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    config_schema: _struct_pb2.Struct
    partition_set_name: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., config_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., partition_set_name: _Optional[str] = ...) -> None: ...

class Op(_message.Message):
    __slots__ = ("name", "description", "tags", "inputs", "outputs", "config_schema", "has_config_schema", "retry_policy")
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
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    inputs: _containers.RepeatedCompositeFieldContainer[OpInput]
    outputs: _containers.RepeatedCompositeFieldContainer[OpOutput]
    config_schema: _struct_pb2.Struct
    has_config_schema: bool
    retry_policy: RetryPolicy
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., inputs: _Optional[_Iterable[_Union[OpInput, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[OpOutput, _Mapping]]] = ..., config_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., has_config_schema: _Optional[bool] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "delay_s", "backoff", "jitter")
    class Backoff(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BACKOFF_NONE: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_LINEAR: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_EXPONENTIAL: _ClassVar[RetryPolicy.Backoff]
    BACKOFF_NONE: RetryPolicy.Backoff
    BACKOFF_LINEAR: RetryPolicy.Backoff
    BACKOFF_EXPONENTIAL: RetryPolicy.Backoff
    class Jitter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        JITTER_NONE: _ClassVar[RetryPolicy.Jitter]
        JITTER_FULL: _ClassVar[RetryPolicy.Jitter]
        JITTER_PLUS_MINUS: _ClassVar[RetryPolicy.Jitter]
    JITTER_NONE: RetryPolicy.Jitter
    JITTER_FULL: RetryPolicy.Jitter
    JITTER_PLUS_MINUS: RetryPolicy.Jitter
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    DELAY_S_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    delay_s: float
    backoff: RetryPolicy.Backoff
    jitter: RetryPolicy.Jitter
    def __init__(self, max_retries: _Optional[int] = ..., delay_s: _Optional[float] = ..., backoff: _Optional[_Union[RetryPolicy.Backoff, str]] = ..., jitter: _Optional[_Union[RetryPolicy.Jitter, str]] = ...) -> None: ...

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

class Schedule(_message.Message):
    __slots__ = ("name", "description", "cron_schedule", "execution_timezone", "job_names", "tags", "default_status", "overlap_policy")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CRON_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    JOB_NAMES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STATUS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    cron_schedule: str
    execution_timezone: str
    job_names: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.ScalarMap[str, str]
    default_status: DefaultStatus
    overlap_policy: OverlapPolicy
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., cron_schedule: _Optional[str] = ..., execution_timezone: _Optional[str] = ..., job_names: _Optional[_Iterable[str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., default_status: _Optional[_Union[DefaultStatus, str]] = ..., overlap_policy: _Optional[_Union[OverlapPolicy, str]] = ...) -> None: ...

class Sensor(_message.Message):
    __slots__ = ("name", "description", "job_names", "minimum_interval_seconds", "default_status", "run_status")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    JOB_NAMES_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_STATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    job_names: _containers.RepeatedScalarFieldContainer[str]
    minimum_interval_seconds: int
    default_status: DefaultStatus
    run_status: RunStatusFilter
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., job_names: _Optional[_Iterable[str]] = ..., minimum_interval_seconds: _Optional[int] = ..., default_status: _Optional[_Union[DefaultStatus, str]] = ..., run_status: _Optional[_Union[RunStatusFilter, _Mapping]] = ...) -> None: ...

class RunStatusFilter(_message.Message):
    __slots__ = ("statuses", "monitored_jobs", "monitored_locations", "monitor_all_locations")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    MONITORED_JOBS_FIELD_NUMBER: _ClassVar[int]
    MONITORED_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    MONITOR_ALL_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[str]
    monitored_jobs: _containers.RepeatedCompositeFieldContainer[MonitoredJob]
    monitored_locations: _containers.RepeatedScalarFieldContainer[str]
    monitor_all_locations: bool
    def __init__(self, statuses: _Optional[_Iterable[str]] = ..., monitored_jobs: _Optional[_Iterable[_Union[MonitoredJob, _Mapping]]] = ..., monitored_locations: _Optional[_Iterable[str]] = ..., monitor_all_locations: _Optional[bool] = ...) -> None: ...

class MonitoredJob(_message.Message):
    __slots__ = ("location_name", "job_name")
    LOCATION_NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    location_name: str
    job_name: str
    def __init__(self, location_name: _Optional[str] = ..., job_name: _Optional[str] = ...) -> None: ...

class PartitionSet(_message.Message):
    __slots__ = ("name", "job_name", "static_partitions", "time_window_partitions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    STATIC_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TIME_WINDOW_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    job_name: str
    static_partitions: StaticPartitions
    time_window_partitions: TimeWindowPartitions
    def __init__(self, name: _Optional[str] = ..., job_name: _Optional[str] = ..., static_partitions: _Optional[_Union[StaticPartitions, _Mapping]] = ..., time_window_partitions: _Optional[_Union[TimeWindowPartitions, _Mapping]] = ...) -> None: ...

class StaticPartitions(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class TimeWindowPartitions(_message.Message):
    __slots__ = ("cron_schedule", "fmt", "timezone", "start", "end", "end_offset")
    CRON_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    FMT_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    cron_schedule: str
    fmt: str
    timezone: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    end_offset: int
    def __init__(self, cron_schedule: _Optional[str] = ..., fmt: _Optional[str] = ..., timezone: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_offset: _Optional[int] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("job_name", "run_key", "run_config", "tags", "partition_key")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    RUN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    job_name: str
    run_key: str
    run_config: _struct_pb2.Struct
    tags: _containers.ScalarMap[str, str]
    partition_key: str
    def __init__(self, job_name: _Optional[str] = ..., run_key: _Optional[str] = ..., run_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., partition_key: _Optional[str] = ...) -> None: ...

class GetPartitionKeysRequest(_message.Message):
    __slots__ = ("repository_name", "partition_set_name", "current_time")
    REPOSITORY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TIME_FIELD_NUMBER: _ClassVar[int]
    repository_name: str
    partition_set_name: str
    current_time: _timestamp_pb2.Timestamp
    def __init__(self, repository_name: _Optional[str] = ..., partition_set_name: _Optional[str] = ..., current_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PartitionKeys(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPartitionKeysReply(_message.Message):
    __slots__ = ("partition_keys", "error")
    PARTITION_KEYS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    partition_keys: PartitionKeys
    error: Error
    def __init__(self, partition_keys: _Optional[_Union[PartitionKeys, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class GetPartitionRunConfigRequest(_message.Message):
    __slots__ = ("repository_name", "partition_set_name", "partition_key", "current_time")
    REPOSITORY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TIME_FIELD_NUMBER: _ClassVar[int]
    repository_name: str
    partition_set_name: str
    partition_key: str
    current_time: _timestamp_pb2.Timestamp
    def __init__(self, repository_name: _Optional[str] = ..., partition_set_name: _Optional[str] = ..., partition_key: _Optional[str] = ..., current_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PartitionRunConfig(_message.Message):
    __slots__ = ("partition_key", "run_config", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    RUN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    partition_key: str
    run_config: _struct_pb2.Struct
    tags: _containers.ScalarMap[str, str]
    def __init__(self, partition_key: _Optional[str] = ..., run_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetPartitionRunConfigReply(_message.Message):
    __slots__ = ("partition_run_config", "error")
    PARTITION_RUN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    partition_run_config: PartitionRunConfig
    error: Error
    def __init__(self, partition_run_config: _Optional[_Union[PartitionRunConfig, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class EvaluateScheduleRequest(_message.Message):
    __slots__ = ("repository_name", "schedule_name", "scheduled_time")
    REPOSITORY_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TIME_FIELD_NUMBER: _ClassVar[int]
    repository_name: str
    schedule_name: str
    scheduled_time: _timestamp_pb2.Timestamp
    def __init__(self, repository_name: _Optional[str] = ..., schedule_name: _Optional[str] = ..., scheduled_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScheduleTick(_message.Message):
    __slots__ = ("run_requests", "skip_reason", "next_tick")
    RUN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    NEXT_TICK_FIELD_NUMBER: _ClassVar[int]
    run_requests: _containers.RepeatedCompositeFieldContainer[RunRequest]
    skip_reason: str
    next_tick: _timestamp_pb2.Timestamp
    def __init__(self, run_requests: _Optional[_Iterable[_Union[RunRequest, _Mapping]]] = ..., skip_reason: _Optional[str] = ..., next_tick: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EvaluateScheduleReply(_message.Message):
    __slots__ = ("tick", "error")
    TICK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    tick: ScheduleTick
    error: Error
    def __init__(self, tick: _Optional[_Union[ScheduleTick, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class EvaluateSensorRequest(_message.Message):
    __slots__ = ("repository_name", "sensor_name", "cursor", "last_tick_time", "last_run_key", "current_time", "run_records")
    REPOSITORY_NAME_FIELD_NUMBER: _ClassVar[int]
    SENSOR_NAME_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_RECORDS_FIELD_NUMBER: _ClassVar[int]
    repository_name: str
    sensor_name: str
    cursor: str
    last_tick_time: _timestamp_pb2.Timestamp
    last_run_key: str
    current_time: _timestamp_pb2.Timestamp
    run_records: _containers.RepeatedCompositeFieldContainer[RunStatusRecord]
    def __init__(self, repository_name: _Optional[str] = ..., sensor_name: _Optional[str] = ..., cursor: _Optional[str] = ..., last_tick_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_run_key: _Optional[str] = ..., current_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_records: _Optional[_Iterable[_Union[RunStatusRecord, _Mapping]]] = ...) -> None: ...

class RunStatusRecord(_message.Message):
    __slots__ = ("seq", "run_id", "status", "job_name", "location_name", "repository_name", "tags", "error_message", "changed_time", "start_time", "end_time")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    seq: int
    run_id: str
    status: str
    job_name: str
    location_name: str
    repository_name: str
    tags: _containers.ScalarMap[str, str]
    error_message: str
    changed_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., run_id: _Optional[str] = ..., status: _Optional[str] = ..., job_name: _Optional[str] = ..., location_name: _Optional[str] = ..., repository_name: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., error_message: _Optional[str] = ..., changed_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SensorTick(_message.Message):
    __slots__ = ("run_requests", "skip_reason", "cursor")
    RUN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    run_requests: _containers.RepeatedCompositeFieldContainer[RunRequest]
    skip_reason: str
    cursor: str
    def __init__(self, run_requests: _Optional[_Iterable[_Union[RunRequest, _Mapping]]] = ..., skip_reason: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class EvaluateSensorReply(_message.Message):
    __slots__ = ("tick", "error")
    TICK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    tick: SensorTick
    error: Error
    def __init__(self, tick: _Optional[_Union[SensorTick, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

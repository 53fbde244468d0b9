"""Pure conversions between the protobuf messages and the pydantic wire models.

Struct values (config schemas, run config) come back with JSON numbers as floats; whole
numbers are turned back into ints, so ``{"times": 3}`` survives a round trip.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.runs import RunStatus
from tether.shared.wire.snapshots import (
    AssetNodeSnapshot,
    Edge,
    InstigatorStatus,
    JobSnapshot,
    LocationSnapshot,
    MonitoredJob,
    OpInput,
    OpOutput,
    OpSnapshot,
    PartitionSetSnapshot,
    PartitionsKind,
    PartitionsSnapshot,
    RepositorySnapshot,
    RetryPolicySnapshot,
    RunStatusSensorSnapshot,
    ScheduleOverlapPolicy,
    ScheduleSnapshot,
    SensorSnapshot,
)
from tether.shared.wire.work import (
    PartitionKeysResult,
    PartitionRunConfigResult,
    RunRequestInfo,
    RunStatusRecord,
    ScheduleTickResult,
    SensorTickResult,
)

#: Largest message a code server or its client sends or receives by default (the gRPC
#: default of 4 MiB is too small for big locations' snapshots).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC channel/server options raising both message size limits to ``max_message_bytes``."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _dict(value: struct_pb2.Struct) -> dict[str, Any]:
    fields: dict[str, Any] = _ints(json_format.MessageToDict(value))
    return fields


def timestamp_to_proto(epoch_seconds: float) -> timestamp_pb2.Timestamp:
    """Epoch seconds -> Timestamp."""
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(epoch_seconds * 1e9))
    return ts


def timestamp_from_proto(ts: timestamp_pb2.Timestamp) -> float:
    """Timestamp -> epoch seconds."""
    return ts.ToNanoseconds() / 1e9


def error_to_proto(error: ErrorInfo) -> pb.Error:
    """ErrorInfo -> pb.Error."""
    msg = pb.Error(cls_name=error.cls_name, message=error.message, traceback=error.traceback)
    if error.cause is not None:
        msg.cause.CopyFrom(error_to_proto(error.cause))
    return msg


def error_from_proto(msg: pb.Error) -> ErrorInfo:
    """pb.Error -> ErrorInfo."""
    cause = error_from_proto(msg.cause) if msg.HasField("cause") else None
    return ErrorInfo(
        cls_name=msg.cls_name, message=msg.message, traceback=msg.traceback, cause=cause
    )


_BACKOFF = {
    None: pb.RetryPolicy.BACKOFF_NONE,
    "LINEAR": pb.RetryPolicy.BACKOFF_LINEAR,
    "EXPONENTIAL": pb.RetryPolicy.BACKOFF_EXPONENTIAL,
}
_JITTER = {
    None: pb.RetryPolicy.JITTER_NONE,
    "FULL": pb.RetryPolicy.JITTER_FULL,
    "PLUS_MINUS": pb.RetryPolicy.JITTER_PLUS_MINUS,
}
_STATUS = {
    InstigatorStatus.STOPPED: pb.DEFAULT_STATUS_STOPPED,
    InstigatorStatus.RUNNING: pb.DEFAULT_STATUS_RUNNING,
}
_OVERLAP = {
    ScheduleOverlapPolicy.ALLOW: pb.OVERLAP_POLICY_ALLOW,
    ScheduleOverlapPolicy.SKIP: pb.OVERLAP_POLICY_SKIP,
}


def _reverse(mapping: dict[Any, Any]) -> dict[Any, Any]:
    return {v: k for k, v in mapping.items()}


def snapshot_to_proto(snap: LocationSnapshot) -> pb.LocationSnapshot:
    """LocationSnapshot -> pb.LocationSnapshot."""
    return pb.LocationSnapshot(
        location_name=snap.location_name,
        repositories=[
            pb.Repository(
                name=repo.name,
                description=repo.description,
                jobs=[_job_to_proto(job) for job in repo.jobs],
                schedules=[_schedule_to_proto(s) for s in repo.schedules],
                sensors=[_sensor_to_proto(s) for s in repo.sensors],
                partition_sets=[_partition_set_to_proto(p) for p in repo.partition_sets],
                assets=[_asset_to_proto(a) for a in repo.assets],
            )
            for repo in snap.repositories
        ],
    )


def _op_to_proto(op: OpSnapshot) -> pb.Op:
    msg = pb.Op(
        name=op.name,
        description=op.description,
        tags=op.tags,
        inputs=[pb.OpInput(name=i.name, type_name=i.type_name) for i in op.inputs],
        outputs=[pb.OpOutput(name=o.name, type_name=o.type_name) for o in op.outputs],
        config_schema=_struct(op.config_schema or {}),
        has_config_schema=op.config_schema is not None,
    )
    if op.retry_policy is not None:
        policy = op.retry_policy
        msg.retry_policy.CopyFrom(
            pb.RetryPolicy(
                max_retries=policy.max_retries,
                delay_s=policy.delay_s,
                backoff=_BACKOFF[policy.backoff],
                jitter=_JITTER[policy.jitter],
            )
        )
    return msg


def _job_to_proto(job: JobSnapshot) -> pb.Job:
    msg = pb.Job(
        name=job.name,
        description=job.description,
        tags=job.tags,
        ops=[_op_to_proto(op) for op in job.ops],
        edges=[
            pb.Edge(
                from_op=e.from_op, from_output=e.from_output, to_op=e.to_op, to_input=e.to_input
            )
            for e in job.edges
        ],
        config_schema=_struct(job.config_schema),
    )
    if job.partition_set_name is not None:
        msg.partition_set_name = job.partition_set_name
    return msg


def _schedule_to_proto(s: ScheduleSnapshot) -> pb.Schedule:
    return pb.Schedule(
        name=s.name,
        description=s.description,
        cron_schedule=s.cron_schedule,
        execution_timezone=s.execution_timezone,
        job_names=s.job_names,
        tags=s.tags,
        default_status=_STATUS[s.default_status],
        overlap_policy=_OVERLAP[s.overlap_policy],
    )


def _sensor_to_proto(s: SensorSnapshot) -> pb.Sensor:
    msg = pb.Sensor(
        name=s.name,
        description=s.description,
        job_names=s.job_names,
        minimum_interval_seconds=s.minimum_interval_seconds,
        default_status=_STATUS[s.default_status],
    )
    if s.run_status is not None:
        watch = s.run_status
        msg.run_status.CopyFrom(
            pb.RunStatusFilter(
                statuses=[str(status) for status in watch.statuses],
                monitored_jobs=[
                    pb.MonitoredJob(location_name=j.location_name, job_name=j.job_name)
                    for j in watch.monitored_jobs
                ],
                monitored_locations=watch.monitored_locations,
                monitor_all_locations=watch.monitor_all_locations,
            )
        )
    return msg


def _partition_set_to_proto(p: PartitionSetSnapshot) -> pb.PartitionSet:
    msg = pb.PartitionSet(name=p.name, job_name=p.job_name)
    _set_partitions(msg, p.partitions)
    return msg


def _set_partitions(msg: pb.PartitionSet | pb.AssetNode, parts: PartitionsSnapshot) -> None:
    """Fill the ``partitions`` oneof of ``msg`` (a partition set's, or an asset's)."""
    if parts.kind is PartitionsKind.STATIC:
        msg.static_partitions.CopyFrom(pb.StaticPartitions(keys=parts.static_keys))
        return
    window = pb.TimeWindowPartitions(
        cron_schedule=parts.cron_schedule or "",
        fmt=parts.fmt or "",
        timezone=parts.timezone or "",
        end_offset=parts.end_offset,
    )
    if parts.start_timestamp is not None:
        window.start.CopyFrom(timestamp_to_proto(parts.start_timestamp))
    if parts.end_timestamp is not None:
        window.end.CopyFrom(timestamp_to_proto(parts.end_timestamp))
    msg.time_window_partitions.CopyFrom(window)


def _asset_to_proto(a: AssetNodeSnapshot) -> pb.AssetNode:
    msg = pb.AssetNode(
        key=a.key,
        description=a.description,
        group_name=a.group_name,
        metadata=_struct(a.metadata),
        tags=a.tags,
        owners=a.owners,
        kinds=a.kinds,
        dependency_keys=[pb.AssetKeyPath(path=k) for k in a.dependency_keys],
        job_names=a.job_names,
    )
    if a.code_version is not None:
        msg.code_version = a.code_version
    if a.op_name is not None:
        msg.op_name = a.op_name
    if a.io_manager_key is not None:
        msg.io_manager_key = a.io_manager_key
    if a.partitions is not None:
        _set_partitions(msg, a.partitions)
    return msg


def snapshot_from_proto(msg: pb.LocationSnapshot) -> LocationSnapshot:
    """pb.LocationSnapshot -> LocationSnapshot."""
    return LocationSnapshot(
        location_name=msg.location_name,
        repositories=[
            RepositorySnapshot(
                name=repo.name,
                description=repo.description,
                jobs=[_job_from_proto(job) for job in repo.jobs],
                schedules=[_schedule_from_proto(s) for s in repo.schedules],
                sensors=[_sensor_from_proto(s) for s in repo.sensors],
                partition_sets=[_partition_set_from_proto(p) for p in repo.partition_sets],
                assets=[_asset_from_proto(a) for a in repo.assets],
            )
            for repo in msg.repositories
        ],
    )


def _op_from_proto(op: pb.Op) -> OpSnapshot:
    retry = None
    if op.HasField("retry_policy"):
        p = op.retry_policy
        retry = RetryPolicySnapshot(
            max_retries=p.max_retries,
            delay_s=p.delay_s,
            backoff=_reverse(_BACKOFF)[p.backoff],
            jitter=_reverse(_JITTER)[p.jitter],
        )
    return OpSnapshot(
        name=op.name,
        description=op.description,
        tags=dict(op.tags),
        inputs=[OpInput(name=i.name, type_name=i.type_name) for i in op.inputs],
        outputs=[OpOutput(name=o.name, type_name=o.type_name) for o in op.outputs],
        config_schema=_dict(op.config_schema) if op.has_config_schema else None,
        retry_policy=retry,
    )


def _job_from_proto(msg: pb.Job) -> JobSnapshot:
    return JobSnapshot(
        name=msg.name,
        description=msg.description,
        tags=dict(msg.tags),
        ops=[_op_from_proto(op) for op in msg.ops],
        edges=[
            Edge(from_op=e.from_op, from_output=e.from_output, to_op=e.to_op, to_input=e.to_input)
            for e in msg.edges
        ],
        config_schema=_dict(msg.config_schema),
        partition_set_name=(msg.partition_set_name if msg.HasField("partition_set_name") else None),
    )


def _schedule_from_proto(s: pb.Schedule) -> ScheduleSnapshot:
    return ScheduleSnapshot(
        name=s.name,
        description=s.description,
        cron_schedule=s.cron_schedule,
        execution_timezone=s.execution_timezone,
        job_names=list(s.job_names),
        tags=dict(s.tags),
        default_status=_reverse(_STATUS)[s.default_status],
        overlap_policy=_reverse(_OVERLAP)[s.overlap_policy],
    )


def _sensor_from_proto(s: pb.Sensor) -> SensorSnapshot:
    run_status = None
    if s.HasField("run_status"):
        watch = s.run_status
        run_status = RunStatusSensorSnapshot(
            statuses=[RunStatus(status) for status in watch.statuses],
            monitored_jobs=[
                MonitoredJob(
                    location_name=j.location_name if j.HasField("location_name") else None,
                    job_name=j.job_name,
                )
                for j in watch.monitored_jobs
            ],
            monitored_locations=list(watch.monitored_locations),
            monitor_all_locations=watch.monitor_all_locations,
        )
    return SensorSnapshot(
        name=s.name,
        description=s.description,
        job_names=list(s.job_names),
        minimum_interval_seconds=s.minimum_interval_seconds,
        default_status=_reverse(_STATUS)[s.default_status],
        run_status=run_status,
    )


def _partition_set_from_proto(p: pb.PartitionSet) -> PartitionSetSnapshot:
    parts = _partitions_from_proto(p)
    assert parts is not None  # a partition set always has its definition
    return PartitionSetSnapshot(name=p.name, job_name=p.job_name, partitions=parts)


def _partitions_from_proto(p: pb.PartitionSet | pb.AssetNode) -> PartitionsSnapshot | None:
    which = p.WhichOneof("partitions")
    if which == "static_partitions":
        return PartitionsSnapshot(
            kind=PartitionsKind.STATIC, static_keys=list(p.static_partitions.keys)
        )
    if which is None and isinstance(p, pb.AssetNode):
        return None
    w = p.time_window_partitions
    return PartitionsSnapshot(
        kind=PartitionsKind.TIME_WINDOW,
        cron_schedule=w.cron_schedule,
        fmt=w.fmt,
        timezone=w.timezone,
        start_timestamp=timestamp_from_proto(w.start) if w.HasField("start") else None,
        end_timestamp=timestamp_from_proto(w.end) if w.HasField("end") else None,
        end_offset=w.end_offset,
    )


def _asset_from_proto(a: pb.AssetNode) -> AssetNodeSnapshot:
    return AssetNodeSnapshot(
        key=list(a.key),
        description=a.description,
        group_name=a.group_name,
        metadata=_dict(a.metadata),
        tags=dict(a.tags),
        owners=list(a.owners),
        kinds=list(a.kinds),
        code_version=a.code_version if a.HasField("code_version") else None,
        dependency_keys=[list(k.path) for k in a.dependency_keys],
        op_name=a.op_name if a.HasField("op_name") else None,
        job_names=list(a.job_names),
        partitions=_partitions_from_proto(a),
        io_manager_key=a.io_manager_key if a.HasField("io_manager_key") else None,
    )


def run_request_to_proto(request: RunRequestInfo) -> pb.RunRequest:
    """RunRequestInfo -> pb.RunRequest."""
    msg = pb.RunRequest(
        job_name=request.job_name, run_config=_struct(request.run_config), tags=request.tags
    )
    if request.run_key is not None:
        msg.run_key = request.run_key
    if request.partition_key is not None:
        msg.partition_key = request.partition_key
    return msg


def run_request_from_proto(msg: pb.RunRequest) -> RunRequestInfo:
    """pb.RunRequest -> RunRequestInfo."""
    return RunRequestInfo(
        job_name=msg.job_name,
        run_key=msg.run_key if msg.HasField("run_key") else None,
        run_config=_dict(msg.run_config),
        tags=dict(msg.tags),
        partition_key=msg.partition_key if msg.HasField("partition_key") else None,
    )


def run_record_to_proto(record: RunStatusRecord) -> pb.RunStatusRecord:
    """RunStatusRecord -> protobuf."""
    msg = pb.RunStatusRecord(
        seq=record.seq,
        run_id=record.run_id,
        status=str(record.status),
        job_name=record.job_name,
        location_name=record.location_name,
        repository_name=record.repository_name,
        tags=record.tags,
        error_message=record.error_message,
        changed_time=timestamp_to_proto(record.changed_timestamp),
    )
    if record.start_timestamp is not None:
        msg.start_time.CopyFrom(timestamp_to_proto(record.start_timestamp))
    if record.end_timestamp is not None:
        msg.end_time.CopyFrom(timestamp_to_proto(record.end_timestamp))
    return msg


def run_record_from_proto(msg: pb.RunStatusRecord) -> RunStatusRecord:
    """protobuf -> RunStatusRecord.

    Raises:
        ValueError: the status is not a run status.
    """
    return RunStatusRecord(
        seq=msg.seq,
        run_id=msg.run_id,
        status=RunStatus(msg.status),
        job_name=msg.job_name,
        location_name=msg.location_name,
        repository_name=msg.repository_name if msg.HasField("repository_name") else None,
        tags=dict(msg.tags),
        error_message=msg.error_message if msg.HasField("error_message") else None,
        changed_timestamp=timestamp_from_proto(msg.changed_time),
        start_timestamp=(
            timestamp_from_proto(msg.start_time) if msg.HasField("start_time") else None
        ),
        end_timestamp=timestamp_from_proto(msg.end_time) if msg.HasField("end_time") else None,
    )


def schedule_tick_to_proto(result: ScheduleTickResult) -> pb.EvaluateScheduleReply:
    """ScheduleTickResult -> the EvaluateSchedule reply."""
    if result.error is not None:
        return pb.EvaluateScheduleReply(error=error_to_proto(result.error))
    tick = pb.ScheduleTick(run_requests=[run_request_to_proto(r) for r in result.run_requests])
    if result.skip_reason is not None:
        tick.skip_reason = result.skip_reason
    if result.next_tick_timestamp is not None:
        tick.next_tick.CopyFrom(timestamp_to_proto(result.next_tick_timestamp))
    return pb.EvaluateScheduleReply(tick=tick)


def schedule_tick_from_proto(
    schedule_name: str, scheduled_timestamp: float, reply: pb.EvaluateScheduleReply
) -> ScheduleTickResult:
    """The EvaluateSchedule reply -> ScheduleTickResult."""
    if reply.WhichOneof("result") == "error":
        return ScheduleTickResult(
            schedule_name=schedule_name,
            scheduled_timestamp=scheduled_timestamp,
            error=error_from_proto(reply.error),
        )
    tick = reply.tick
    return ScheduleTickResult(
        schedule_name=schedule_name,
        scheduled_timestamp=scheduled_timestamp,
        run_requests=[run_request_from_proto(r) for r in tick.run_requests],
        skip_reason=tick.skip_reason if tick.HasField("skip_reason") else None,
        next_tick_timestamp=(
            timestamp_from_proto(tick.next_tick) if tick.HasField("next_tick") else None
        ),
    )


def sensor_tick_to_proto(result: SensorTickResult) -> pb.EvaluateSensorReply:
    """SensorTickResult -> the EvaluateSensor reply."""
    if result.error is not None:
        return pb.EvaluateSensorReply(error=error_to_proto(result.error))
    tick = pb.SensorTick(run_requests=[run_request_to_proto(r) for r in result.run_requests])
    if result.skip_reason is not None:
        tick.skip_reason = result.skip_reason
    if result.cursor is not None:
        tick.cursor = result.cursor
    return pb.EvaluateSensorReply(tick=tick)


def sensor_tick_from_proto(sensor_name: str, reply: pb.EvaluateSensorReply) -> SensorTickResult:
    """The EvaluateSensor reply -> SensorTickResult."""
    if reply.WhichOneof("result") == "error":
        return SensorTickResult(sensor_name=sensor_name, error=error_from_proto(reply.error))
    tick = reply.tick
    return SensorTickResult(
        sensor_name=sensor_name,
        run_requests=[run_request_from_proto(r) for r in tick.run_requests],
        skip_reason=tick.skip_reason if tick.HasField("skip_reason") else None,
        cursor=tick.cursor if tick.HasField("cursor") else None,
    )


def partition_keys_from_proto(
    partition_set_name: str, reply: pb.GetPartitionKeysReply
) -> PartitionKeysResult:
    """The GetPartitionKeys reply -> PartitionKeysResult."""
    if reply.WhichOneof("result") == "error":
        return PartitionKeysResult(
            partition_set_name=partition_set_name, error=error_from_proto(reply.error)
        )
    return PartitionKeysResult(
        partition_set_name=partition_set_name, partition_keys=list(reply.partition_keys.keys)
    )


def partition_run_config_to_proto(
    result: PartitionRunConfigResult,
) -> pb.GetPartitionRunConfigReply:
    """PartitionRunConfigResult -> the GetPartitionRunConfig reply."""
    if result.error is not None:
        return pb.GetPartitionRunConfigReply(error=error_to_proto(result.error))
    return pb.GetPartitionRunConfigReply(
        partition_run_config=pb.PartitionRunConfig(
            partition_key=result.partition_key,
            run_config=_struct(result.run_config),
            tags=result.tags,
        )
    )


def partition_run_config_from_proto(
    partition_set_name: str, partition_key: str, reply: pb.GetPartitionRunConfigReply
) -> PartitionRunConfigResult:
    """The GetPartitionRunConfig reply -> PartitionRunConfigResult."""
    if reply.WhichOneof("result") == "error":
        return PartitionRunConfigResult(
            partition_set_name=partition_set_name,
            partition_key=partition_key,
            error=error_from_proto(reply.error),
        )
    body = reply.partition_run_config
    return PartitionRunConfigResult(
        partition_set_name=partition_set_name,
        partition_key=body.partition_key,
        run_config=_dict(body.run_config),
        tags=dict(body.tags),
    )

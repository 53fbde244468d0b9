"""Tick, partition and run-request replies survive the proto conversions (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tether.sdk import RunRequest, SensorEvaluationContext, UserCodeError, job, op, sensor
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc.convert import (
    partition_run_config_from_proto,
    partition_run_config_to_proto,
    schedule_tick_from_proto,
    schedule_tick_to_proto,
    sensor_tick_from_proto,
    sensor_tick_to_proto,
)
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.work import (
    PartitionRunConfigResult,
    RunRequestInfo,
    ScheduleTickResult,
    SensorTickResult,
)

REQUEST = RunRequestInfo(
    job_name="etl",
    run_key="2026-01-01",
    run_config={"ops": {"load": {"config": {"times": 3, "ratio": 0.5, "tags": ["a"]}}}},
    tags={"tether/partition": "2026-01-01"},
    partition_key="2026-01-01",
)
ERROR = ErrorInfo(
    cls_name="tether.sdk._errors.UserCodeError",
    message="sensor 's': raised ValueError('x')",
    traceback="Traceback ...",
    cause=ErrorInfo(cls_name="ValueError", message="x"),
)


def wire(message):
    return type(message).FromString(message.SerializeToString())


def test_schedule_tick_round_trip() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    for result in (
        ScheduleTickResult(
            schedule_name="s",
            scheduled_timestamp=at,
            run_requests=[REQUEST, RunRequestInfo(job_name="other")],
            next_tick_timestamp=at + 86400,
        ),
        ScheduleTickResult(schedule_name="s", scheduled_timestamp=at, skip_reason=""),
        ScheduleTickResult(schedule_name="s", scheduled_timestamp=at, error=ERROR),
    ):
        assert schedule_tick_from_proto("s", at, wire(schedule_tick_to_proto(result))) == result


def test_sensor_tick_and_partition_config_round_trip() -> None:
    for result in (
        SensorTickResult(sensor_name="s", run_requests=[REQUEST], cursor="c1"),
        SensorTickResult(sensor_name="s", skip_reason="nothing new"),
        SensorTickResult(sensor_name="s", error=ERROR),
    ):
        assert sensor_tick_from_proto("s", wire(sensor_tick_to_proto(result))) == result
    config = PartitionRunConfigResult(
        partition_set_name="p", partition_key="k", run_config=REQUEST.run_config, tags={"a": "b"}
    )
    reply = wire(partition_run_config_to_proto(config))
    assert isinstance(reply, pb.GetPartitionRunConfigReply)
    assert partition_run_config_from_proto("p", "k", reply) == config


def test_run_request_fields_are_checked() -> None:
    @op
    def step() -> None: ...

    @job
    def target():
        step()

    @sensor(job=target)
    def numeric_key():
        return RunRequest(run_key=7)  # type: ignore[arg-type]

    with pytest.raises(UserCodeError, match="run_key must be a string"):
        numeric_key.evaluate_tick(SensorEvaluationContext(sensor_name="numeric_key"))

"""Partition, schedule, sensor and health RPCs against real code server subprocesses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.convert import (
    error_from_proto,
    partition_keys_from_proto,
    partition_run_config_from_proto,
    run_record_to_proto,
    schedule_tick_from_proto,
    sensor_tick_from_proto,
    snapshot_from_proto,
    timestamp_to_proto,
)
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import RunStatus
from tether.shared.wire.work import RunStatusRecord

pytestmark = pytest.mark.integration

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
CODESERVER = "tether.codeserver.v1.CodeServer"

#: A location whose schedule, sensor and partition functions misbehave in every way.
TROUBLED = """
import time
from tether.sdk import (
    Definitions, RunFailureSensorContext, RunRequest, SensorEvaluationContext,
    StaticPartitionsDefinition, job, op, partitioned_config, run_failure_sensor, schedule,
    sensor,
)


@op
def step() -> None: ...


@job
def target():
    step()


@partitioned_config(StaticPartitionsDefinition(["a", "b"]))
def broken_config(key: str) -> dict:
    raise LookupError(f"no config for {key}")


@job(config=broken_config)
def partitioned():
    step()


@schedule(cron_schedule="* * * * *", job=target)
def broken_schedule():
    raise RuntimeError("schedule exploded")


@sensor(job=target)
def broken_sensor(context):
    raise ValueError("sensor exploded")


@sensor(job=target)
def slow_sensor():
    time.sleep(60)


@sensor(job=target)
def not_json_sensor():
    return RunRequest(run_config={"when": object()})


@sensor(job=target)
def echo_context(context: SensorEvaluationContext):
    return RunRequest(
        run_key=f"after-{context.last_run_key}",
        tags={
            "cursor": str(context.cursor),
            "last_tick": context.last_tick_time.isoformat() if context.last_tick_time else "-",
            "now": context.current_time.isoformat(),
        },
    )


@run_failure_sensor(request_job=target)
def on_failure(context: RunFailureSensorContext):
    run = context.run
    return RunRequest(
        tags={
            "failed": run.run_id,
            "why": str(context.error_message),
            "ended": run.end_time.isoformat() if run.end_time else "-",
        }
    )


defs = Definitions(
    jobs=[target, partitioned],
    schedules=[broken_schedule],
    sensors=[broken_sensor, slow_sensor, not_json_sensor, echo_context, on_failure],
)
"""


def ts(moment: datetime):
    return timestamp_to_proto(moment.timestamp())


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inbox")
    (path / "a.txt").write_text("Ada")
    (path / "b.txt").write_text("Bob")
    return path


@pytest.fixture(scope="module")
def examples(module_server_for, inbox: Path):
    location = LocationConfig(
        name="examples", module="example_jobs", working_directory=str(EXAMPLES_DIR)
    )
    return module_server_for(location, {"TETHER_EXAMPLES_INBOX": str(inbox)})


@pytest.fixture(scope="module")
def troubled(module_server_for, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("troubled") / "troubled.py"
    path.write_text(TROUBLED)
    return module_server_for(LocationConfig(name="troubled", python_file=str(path)))


EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def abort_code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_snapshot_lists_schedules_sensors_and_partition_sets(examples) -> None:
    reply = examples.stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=10)
    repo = snapshot_from_proto(reply.snapshot).repositories[0]
    assert [s.name for s in repo.schedules] == [
        "hello_weekday_mornings",
        "hourly_greeting",
        "daily_report_schedule",
        "regional_sync_nightly",
    ]
    assert [s.name for s in repo.sensors] == ["greeting_files"]
    assert {p.name: p.partitions.kind for p in repo.partition_sets} == {
        "daily_report_partition_set": "TIME_WINDOW",
        "regional_sync_partition_set": "STATIC",
        "__asset_job_partition_set": "TIME_WINDOW",
    }


def test_partition_keys_and_run_config(examples) -> None:
    stub = examples.stub
    request = pb.GetPartitionKeysRequest(
        partition_set_name="daily_report_partition_set",
        current_time=ts(datetime(2026, 1, 4, tzinfo=BERLIN)),
    )
    keys = partition_keys_from_proto("daily", stub.GetPartitionKeys(request, timeout=10))
    assert keys.error is None
    assert keys.partition_keys == ["2026-01-01", "2026-01-02", "2026-01-03"]
    static = stub.GetPartitionKeys(
        pb.GetPartitionKeysRequest(
            repository_name="examples", partition_set_name="regional_sync_partition_set"
        ),
        timeout=10,
    )
    assert list(static.partition_keys.keys) == ["eu", "us", "apac"]

    reply = stub.GetPartitionRunConfig(
        pb.GetPartitionRunConfigRequest(
            partition_set_name="daily_report_partition_set", partition_key="2026-01-05"
        ),
        timeout=10,
    )
    result = partition_run_config_from_proto("daily_report_partition_set", "2026-01-05", reply)
    assert result.error is None
    assert result.run_config == {"ops": {"build_report": {"config": {"day": "2026-01-05"}}}}
    assert result.tags["tether/partition"] == "2026-01-05"
    assert result.tags["weekday"] == "Monday"
    assert result.tags["tether/partition/start"] == "2026-01-05T00:00:00+01:00"

    for bad in (
        pb.GetPartitionRunConfigRequest(partition_set_name="nope", partition_key="x"),
        pb.GetPartitionRunConfigRequest(
            partition_set_name="regional_sync_partition_set", partition_key="mars"
        ),
        pb.GetPartitionRunConfigRequest(
            repository_name="other", partition_set_name="regional_sync_partition_set"
        ),
    ):
        assert abort_code(lambda b=bad: stub.GetPartitionRunConfig(b, timeout=10)) == (
            grpc.StatusCode.NOT_FOUND
        )


def test_evaluate_schedule_ticks(examples) -> None:
    stub = examples.stub
    monday_9 = datetime(2026, 3, 30, 9, tzinfo=BERLIN)  # the first Monday in CEST
    reply = stub.EvaluateSchedule(
        pb.EvaluateScheduleRequest(
            schedule_name="hello_weekday_mornings", scheduled_time=ts(monday_9)
        ),
        timeout=10,
    )
    tick = schedule_tick_from_proto("hello_weekday_mornings", monday_9.timestamp(), reply)
    [request] = tick.run_requests
    assert request.job_name == "hello" and request.tags["origin"] == "schedule"
    assert request.tags["tether/scheduled_execution_time"] == "2026-03-30T09:00:00+02:00"
    assert tick.next_tick_timestamp == datetime(2026, 3, 31, 9, tzinfo=BERLIN).timestamp()

    early = datetime(2026, 1, 1, 3, tzinfo=NEW_YORK)
    reply = stub.EvaluateSchedule(
        pb.EvaluateScheduleRequest(schedule_name="hourly_greeting", scheduled_time=ts(early)),
        timeout=10,
    )
    skipped = schedule_tick_from_proto("hourly_greeting", early.timestamp(), reply)
    assert skipped.run_requests == [] and skipped.skip_reason == "03:00 is too early to greet"

    midnight = datetime(2026, 1, 2, tzinfo=BERLIN)
    reply = stub.EvaluateSchedule(
        pb.EvaluateScheduleRequest(
            schedule_name="daily_report_schedule", scheduled_time=ts(midnight)
        ),
        timeout=10,
    )
    [partition_run] = schedule_tick_from_proto("d", midnight.timestamp(), reply).run_requests
    assert (partition_run.partition_key, partition_run.run_key) == ("2026-01-01", "2026-01-01")
    assert partition_run.run_config == {"ops": {"build_report": {"config": {"day": "2026-01-01"}}}}

    assert (
        abort_code(
            lambda: stub.EvaluateSchedule(
                pb.EvaluateScheduleRequest(schedule_name="hourly_greeting"), timeout=10
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        abort_code(
            lambda: stub.EvaluateSchedule(
                pb.EvaluateScheduleRequest(schedule_name="nope", scheduled_time=ts(midnight)),
                timeout=10,
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


def test_evaluate_sensor_with_cursor(examples) -> None:
    stub = examples.stub
    first = sensor_tick_from_proto(
        "greeting_files",
        stub.EvaluateSensor(pb.EvaluateSensorRequest(sensor_name="greeting_files"), timeout=10),
    )
    assert [(r.run_key, r.job_name) for r in first.run_requests] == [
        ("a.txt", "configured"),
        ("b.txt", "configured"),
    ]
    assert first.run_requests[1].run_config == {
        "ops": {"configured_greeting": {"config": {"name": "Bob"}}}
    }
    assert first.run_requests[0].tags["tether/sensor_name"] == "greeting_files"
    assert first.cursor == "b.txt"
    again = sensor_tick_from_proto(
        "greeting_files",
        stub.EvaluateSensor(
            pb.EvaluateSensorRequest(sensor_name="greeting_files", cursor=first.cursor),
            timeout=10,
        ),
    )
    assert again.run_requests == [] and again.skip_reason == "no new files"
    assert again.cursor == "b.txt"


def test_sensor_context_travels(troubled) -> None:
    last_tick = datetime(2026, 5, 1, 12, tzinfo=UTC)
    now = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    reply = troubled.stub.EvaluateSensor(
        pb.EvaluateSensorRequest(
            sensor_name="echo_context",
            cursor="c7",
            last_tick_time=ts(last_tick),
            last_run_key="k41",
            current_time=ts(now),
        ),
        timeout=10,
    )
    [request] = sensor_tick_from_proto("echo_context", reply).run_requests
    assert request.run_key == "after-k41"
    assert request.tags["cursor"] == "c7"
    assert request.tags["last_tick"] == last_tick.isoformat()
    assert request.tags["now"] == now.isoformat()


def test_run_records_reach_a_run_status_sensor_of_their_location(troubled) -> None:
    ended = datetime(2026, 5, 1, 12, tzinfo=UTC)

    def failure(run_id: str, location: str) -> pb.RunStatusRecord:
        return run_record_to_proto(
            RunStatusRecord(
                seq=len(run_id),
                run_id=run_id,
                status=RunStatus.FAILURE,
                job_name="target",
                location_name=location,
                error_message=f"{run_id} broke",
                changed_timestamp=ended.timestamp(),
                end_timestamp=ended.timestamp(),
            )
        )

    request = pb.EvaluateSensorRequest(sensor_name="on_failure", cursor="17")
    # Its own location's run only: the code server knows which location it serves.
    request.run_records.extend([failure("here", "troubled"), failure("there", "elsewhere")])
    tick = sensor_tick_from_proto("on_failure", troubled.stub.EvaluateSensor(request, timeout=10))
    [run_request] = tick.run_requests
    assert run_request.job_name == "target" and run_request.run_key == "here:FAILURE:0"
    assert run_request.tags["failed"] == "here" and run_request.tags["why"] == "here broke"
    assert run_request.tags["ended"] == ended.isoformat()
    assert tick.cursor == "17"

    bad = pb.EvaluateSensorRequest(sensor_name="on_failure")
    bad.run_records.append(failure("x", "troubled"))
    bad.run_records[0].status = "EXPLODED"
    code = abort_code(lambda: troubled.stub.EvaluateSensor(bad, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def _error(reply) -> ErrorInfo:
    assert reply.WhichOneof("result") == "error"
    return error_from_proto(reply.error)


def test_user_code_errors_come_back_structured(troubled) -> None:
    stub = troubled.stub
    schedule_error = _error(
        stub.EvaluateSchedule(
            pb.EvaluateScheduleRequest(
                schedule_name="broken_schedule", scheduled_time=ts(datetime.now(UTC))
            ),
            timeout=10,
        )
    )
    assert schedule_error.cls_name == "tether.sdk._errors.UserCodeError"
    assert "schedule exploded" in schedule_error.message
    assert schedule_error.cause is not None and schedule_error.cause.cls_name == "RuntimeError"
    assert "troubled.py" in schedule_error.cause.traceback

    sensor_error = _error(
        stub.EvaluateSensor(pb.EvaluateSensorRequest(sensor_name="broken_sensor"), timeout=10)
    )
    assert sensor_error.cause is not None and sensor_error.cause.cls_name == "ValueError"

    config_error = _error(
        stub.GetPartitionRunConfig(
            pb.GetPartitionRunConfigRequest(
                partition_set_name="partitioned_partition_set", partition_key="a"
            ),
            timeout=10,
        )
    )
    assert config_error.cause is not None and config_error.cause.cls_name == "LookupError"
    assert "no config for a" in config_error.cause.message

    not_json = _error(
        stub.EvaluateSensor(pb.EvaluateSensorRequest(sensor_name="not_json_sensor"), timeout=10)
    )
    assert "not JSON" in not_json.message

    # The server kept serving through all of it.
    assert stub.Ping(pb.PingRequest(echo="still here"), timeout=10).echo == "still here"


def test_deadlines_bound_stuck_user_code(server_for, tmp_path: Path) -> None:
    path = tmp_path / "troubled.py"
    path.write_text(TROUBLED)
    troubled = server_for(
        LocationConfig(name="troubled", python_file=str(path)),
        {"TETHER_CODESERVER_USER_CODE_TIMEOUT": "2"},
    )
    stub = troubled.stub
    # The client's deadline bounds the call: the server answers just before it with a
    # structured timeout (or, if the reply is late, the client sees DEADLINE_EXCEEDED).
    try:
        reply = stub.EvaluateSensor(pb.EvaluateSensorRequest(sensor_name="slow_sensor"), timeout=1)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        assert _error(reply).cls_name == "tether.codeserver.user_code.UserCodeTimeout"
    # Without a shorter client deadline, the server's cap applies
    # (TETHER_CODESERVER_USER_CODE_TIMEOUT=2): a structured timeout error.
    timeout_error = _error(
        stub.EvaluateSensor(pb.EvaluateSensorRequest(sensor_name="slow_sensor"), timeout=30)
    )
    assert timeout_error.cls_name == "tether.codeserver.user_code.UserCodeTimeout"
    assert "2.0s" in timeout_error.message
    # Stuck user code holds threads, not the server.
    assert stub.Ping(pb.PingRequest(echo="x"), timeout=10).loaded
    code, _, _ = troubled.stop()
    assert code == 0  # stuck user threads do not keep the process alive after SIGTERM


def test_health_service(examples, server_for, broken_location) -> None:
    broken = server_for(broken_location)
    for server in (examples, broken):
        health = health_pb2_grpc.HealthStub(server.channel)
        for service in ("", CODESERVER):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert (
        abort_code(
            lambda: broken.stub.EvaluateSensor(
                pb.EvaluateSensorRequest(sensor_name="s"), timeout=10
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )


def test_snapshot_larger_than_4_mib(server_for, tmp_path: Path) -> None:
    path = tmp_path / "big.py"
    path.write_text(
        "from tether.sdk import Definitions, job, op\n"
        "@op\n"
        "def step() -> None: ...\n"
        "jobs = []\n"
        "for i in range(50):\n"
        "    @job(name=f'job_{i}', description='x' * 120_000)\n"
        "    def body():\n"
        "        step()\n"
        "    jobs.append(body)\n"
        "defs = Definitions(jobs=jobs)\n"
    )
    server = server_for(LocationConfig(name="big", python_file=str(path)))
    reply = server.stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=30)
    assert reply.ByteSize() > 4 * 1024 * 1024
    assert len(snapshot_from_proto(reply.snapshot).repositories[0].jobs) == 50
    # A client left at gRPC's default limit cannot receive it: the raised limit matters.
    with grpc.insecure_channel(server.ready.address) as default_channel:
        stub = pb_grpc.CodeServerStub(default_channel)
        assert (
            abort_code(
                lambda: stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=30, metadata=server.auth)
            )
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )


def test_several_repositories_are_addressed_by_name(server_for, tmp_path: Path) -> None:
    path = tmp_path / "multi.py"
    path.write_text(
        "from tether.sdk import Definitions, RunRequest, job, op, sensor\n"
        "@op\n"
        "def step() -> None: ...\n"
        "@job\n"
        "def load():\n"
        "    step()\n"
        "@sensor(job=load)\n"
        "def poke():\n"
        "    return RunRequest(run_key='k')\n"
        "main = Definitions(jobs=[load], sensors=[poke], name='main')\n"
        "repositories = [Definitions(name='empty'), main]\n"
    )
    server = server_for(LocationConfig(name="multi", python_file=str(path)))
    snapshot = snapshot_from_proto(
        server.stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=10).snapshot
    )
    assert [r.name for r in snapshot.repositories] == ["empty", "main"]
    reply = server.stub.EvaluateSensor(
        pb.EvaluateSensorRequest(repository_name="main", sensor_name="poke"), timeout=10
    )
    assert [r.run_key for r in reply.tick.run_requests] == ["k"]
    assert (
        abort_code(
            lambda: server.stub.EvaluateSensor(
                pb.EvaluateSensorRequest(sensor_name="poke"), timeout=10
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        abort_code(
            lambda: server.stub.EvaluateSensor(
                pb.EvaluateSensorRequest(repository_name="empty", sensor_name="poke"), timeout=10
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )

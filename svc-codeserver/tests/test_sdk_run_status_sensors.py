"""Run-status sensors: the decorators, which status changes they react to, what they
request, and how their snapshot and run records cross the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tether.sdk import (
    TRIGGERING_RUN_TAG,
    DefinitionError,
    Definitions,
    JobSelector,
    RunFailureSensorContext,
    RunRecord,
    RunRequest,
    RunStatus,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorResult,
    SkipReason,
    UserCodeError,
    job,
    op,
    run_failure_sensor,
    run_status_sensor,
)
from tether.shared.grpc.convert import (
    run_record_from_proto,
    run_record_to_proto,
    snapshot_from_proto,
    snapshot_to_proto,
)
from tether.shared.wire.snapshots import MonitoredJob, RunStatusSensorSnapshot, SensorSnapshot
from tether.shared.wire.work import EvaluateSensorPayload, RunStatusRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@op
def step() -> None: ...


@job
def nightly():
    step()


@job
def other():
    step()


@job
def cleanup():
    step()


def noop() -> None: ...


def record(
    run_id: str = "r1",
    status: RunStatus = RunStatus.FAILURE,
    job_name: str = "nightly",
    location_name: str = "here",
    **extra: Any,
) -> RunRecord:
    return RunRecord(
        run_id=run_id, status=status, job_name=job_name, location_name=location_name, **extra
    )


def evaluate(defs: Definitions, name: str, *records: RunRecord, cursor: str | None = "41"):
    return defs.evaluate_sensor(
        name, cursor=cursor, current_time=NOW, location_name="here", run_records=records
    )


def test_run_failure_sensor_requests_a_run_per_failed_run_with_the_record_in_context() -> None:
    seen: list[tuple[str, RunStatus, str | None]] = []

    @run_failure_sensor(monitored_jobs=[nightly], request_job=cleanup)
    def on_failure(context: RunFailureSensorContext):
        """Clean up after a failed nightly."""
        seen.append((context.run.run_id, context.run_status, context.error_message))
        return RunRequest(tags={"failed": context.run.run_id})

    assert isinstance(on_failure, RunStatusSensorDefinition)
    assert on_failure.description == "Clean up after a failed nightly."
    defs = Definitions(jobs=[nightly], sensors=[on_failure])
    assert "cleanup" in defs.jobs  # a request job joins the repository like a sensor's job
    result = evaluate(
        defs,
        "on_failure",
        record("r1", error_message="step boom failed"),
        record("r2", tags={"team": "data"}),
    )
    assert seen == [("r1", RunStatus.FAILURE, "step boom failed"), ("r2", RunStatus.FAILURE, None)]
    assert [r.job_name for r in result.run_requests] == ["cleanup", "cleanup"]
    first, second = result.run_requests
    assert first.tags == {
        "failed": "r1",
        "tether/sensor_name": "on_failure",
        TRIGGERING_RUN_TAG: "r1",
    }
    # Keys from the triggering run: a tick evaluated again launches nothing twice.
    assert (first.run_key, second.run_key) == ("r1:FAILURE:0", "r2:FAILURE:0")
    assert result.cursor == "41"  # the control plane's, handed back unchanged
    assert result.skip_reason is None


def test_only_watched_runs_in_the_status_reach_the_function() -> None:
    calls: list[str] = []

    @run_status_sensor(run_status="SUCCESS", monitored_jobs=[nightly, "other"])
    def on_success(context: RunStatusSensorContext) -> None:
        calls.append(context.run.run_id)

    defs = Definitions(jobs=[nightly, other], sensors=[on_success])
    result = evaluate(
        defs,
        "on_success",
        record("failed", RunStatus.FAILURE),
        record("ok", RunStatus.SUCCESS),
        record("by-name", RunStatus.SUCCESS, job_name="other"),
        record("unwatched-job", RunStatus.SUCCESS, job_name="cleanup"),
        record("elsewhere", RunStatus.SUCCESS, location_name="another"),
    )
    assert calls == ["ok", "by-name"]
    assert result.run_requests == []
    assert result.skip_reason == "2 watched run(s) reached SUCCESS; no run requested"


def test_default_scope_is_the_own_location_and_selectors_reach_other_locations() -> None:
    def ids(sensor: RunStatusSensorDefinition, *records: RunRecord) -> list[str]:
        return [r.run_id for r in records if sensor.watch.matches(r, "here")]

    anything = [
        record("own", job_name="x"),
        record("theirs", job_name="nightly", location_name="there"),
        record("far", job_name="y", location_name="far"),
    ]
    default = run_failure_sensor(noop)  # bare use: no request job, own location
    assert default.name == "noop"
    assert ids(default, *anything) == ["own"]
    selected = RunStatusSensorDefinition(
        name="selected",
        run_status=RunStatus.FAILURE,
        evaluation_fn=noop,
        monitored_jobs=[JobSelector("there", "nightly")],
        monitored_locations=["far"],
    )
    assert ids(selected, *anything) == ["theirs", "far"]
    everywhere = run_failure_sensor(monitor_all_locations=True)(noop)
    assert ids(everywhere, *anything) == ["own", "theirs", "far"]
    # A job selector names the location: the same job name elsewhere is not it.
    assert ids(selected, record("same-name-here", job_name="nightly")) == []


def test_no_watched_change_skips_without_calling_the_function() -> None:
    @run_failure_sensor(request_job=cleanup)
    def never(context: RunStatusSensorContext):
        raise AssertionError("called without a record")

    defs = Definitions(sensors=[never])
    result = evaluate(defs, "never", record("ok", RunStatus.SUCCESS))
    assert result.run_requests == []
    assert result.skip_reason == "no watched run reached FAILURE since the last tick"
    assert result.cursor == "41"


def test_skip_reasons_keys_and_several_request_jobs() -> None:
    @run_failure_sensor(request_jobs=[cleanup, other])
    def fan_out(context: RunStatusSensorContext):
        if context.run.tags.get("ignore"):
            yield SkipReason("ignored on purpose")
            return
        yield RunRequest(job_name="cleanup")
        yield RunRequest(job_name="other", run_key="mine")

    defs = Definitions(jobs=[nightly], sensors=[fan_out])
    result = evaluate(defs, "fan_out", record("a"), record("b", tags={"ignore": "1"}))
    assert [(r.job_name, r.run_key) for r in result.run_requests] == [
        ("cleanup", "a:FAILURE:0"),
        ("other", "mine"),
    ]
    only_skips = evaluate(defs, "fan_out", record("b", tags={"ignore": "1"}))
    assert only_skips.skip_reason == "ignored on purpose"


def test_user_code_mistakes_are_user_code_errors() -> None:
    @run_failure_sensor()
    def no_target(context: RunStatusSensorContext):
        return RunRequest()

    @run_failure_sensor(request_job=cleanup)
    def explodes(context: RunStatusSensorContext):
        raise RuntimeError("boom")

    @run_failure_sensor(request_job=cleanup)
    def sets_cursor(context: RunStatusSensorContext):
        return SensorResult(cursor="mine")

    defs = Definitions(sensors=[no_target, explodes, sets_cursor])
    with pytest.raises(UserCodeError, match="has no request_job"):
        evaluate(defs, "no_target", record())
    with pytest.raises(UserCodeError, match="boom") as err:
        evaluate(defs, "explodes", record())
    assert isinstance(err.value.__cause__, RuntimeError)
    with pytest.raises(UserCodeError, match="kept by the control plane"):
        evaluate(defs, "sets_cursor", record())


def test_definition_errors_are_clear() -> None:
    with pytest.raises(DefinitionError, match="needs run_status"):
        run_status_sensor()(noop)  # type: ignore[call-overload]
    with pytest.raises(DefinitionError, match="'DONE' is not one of"):
        run_status_sensor(run_status="DONE")(noop)
    with pytest.raises(DefinitionError, match="monitored_jobs takes jobs"):
        run_failure_sensor(monitored_jobs=[42])(noop)  # type: ignore[list-item]
    with pytest.raises(DefinitionError, match="needs both names"):
        run_failure_sensor(monitored_jobs=[JobSelector("", "x")])(noop)
    with pytest.raises(DefinitionError, match="monitored_locations takes location names"):
        run_failure_sensor(monitored_locations=[""])(noop)
    with pytest.raises(DefinitionError, match="monitor_all_locations already watches"):
        run_failure_sensor(monitor_all_locations=True, monitored_locations=["x"])(noop)


def test_snapshot_carries_what_the_sensor_watches_through_protobuf() -> None:
    @run_status_sensor(
        run_status=RunStatus.CANCELED,
        monitored_jobs=[nightly, JobSelector("there", "load")],
        monitored_locations=["far"],
        request_job=cleanup,
        minimum_interval_seconds=5,
    )
    def on_cancel(context: RunStatusSensorContext) -> None: ...

    @run_failure_sensor(monitor_all_locations=True)
    def anywhere(context: RunStatusSensorContext) -> None: ...

    defs = Definitions(jobs=[nightly], sensors=[on_cancel, anywhere])
    snap = defs.location_snapshot("here")
    assert snapshot_from_proto(snapshot_to_proto(snap)) == snap
    by_name = {s.name: s for s in snap.repositories[0].sensors}
    assert by_name["on_cancel"].job_names == ["cleanup"]
    assert by_name["on_cancel"].run_status == RunStatusSensorSnapshot(
        statuses=[RunStatus.CANCELED],
        monitored_jobs=[
            MonitoredJob(location_name=None, job_name="nightly"),
            MonitoredJob(location_name="there", job_name="load"),
        ],
        monitored_locations=["far"],
    )
    assert by_name["anywhere"].run_status is not None
    assert by_name["anywhere"].run_status.monitor_all_locations


def test_plain_sensors_and_payloads_keep_their_wire_shape() -> None:
    # Peers deployed before run-status sensors reject unknown fields: leave them out.
    plain = SensorSnapshot(name="s")
    assert "run_status" not in plain.model_dump(mode="json")
    payload = EvaluateSensorPayload(sensor_name="s")
    assert "run_records" not in payload.model_dump(mode="json")
    with_records = EvaluateSensorPayload(
        sensor_name="s",
        run_records=[
            RunStatusRecord(
                seq=7,
                run_id="r",
                status=RunStatus.FAILURE,
                job_name="j",
                location_name="l",
                changed_timestamp=1.5,
            )
        ],
    )
    assert EvaluateSensorPayload.model_validate(with_records.model_dump(mode="json")) == (
        with_records
    )


def test_run_records_round_trip_through_protobuf() -> None:
    full = RunStatusRecord(
        seq=12,
        run_id="r",
        status=RunStatus.FAILURE,
        job_name="j",
        location_name="l",
        repository_name="repo",
        tags={"a": "b"},
        error_message="it broke",
        changed_timestamp=100.25,
        start_timestamp=90.5,
        end_timestamp=100.25,
    )
    bare = RunStatusRecord(
        seq=13, run_id="q", status=RunStatus.QUEUED, job_name="j", location_name="l",
        changed_timestamp=5.0,
    )  # fmt: skip
    for r in (full, bare):
        assert run_record_from_proto(run_record_to_proto(r)) == r
    bad = run_record_to_proto(bare)
    bad.status = "DONE"
    with pytest.raises(ValueError, match="DONE"):
        run_record_from_proto(bad)

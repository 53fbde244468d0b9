"""Schedules, sensors, Definitions holding them, and their snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from tether.sdk import (
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DefinitionError,
    Definitions,
    PartitionKeyError,
    RetryPolicy,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    ScheduleOverlapPolicy,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    StaticPartitionsDefinition,
    UserCodeError,
    build_schedule_from_partitioned_job,
    job,
    op,
    partitioned_config,
    schedule,
    sensor,
)
from tether.shared.grpc.convert import snapshot_from_proto, snapshot_to_proto
from tether.shared.wire.snapshots import InstigatorStatus, PartitionsKind

BERLIN = ZoneInfo("Europe/Berlin")


@op
def step() -> None: ...


@job
def plain():
    step()


@job
def other():
    step()


DAILY = DailyPartitionsDefinition(start="2026-01-01", timezone="Europe/Berlin")


@partitioned_config(DAILY)
def daily_config(key: str) -> dict:
    return {"ops": {}, "key": key} if key == "2026-01-01" else {}


@job(config=daily_config, op_retry_policy=RetryPolicy(max_retries=2, delay=1.5))
def daily_job():
    step()


@job(partitions_def=StaticPartitionsDefinition(["eu", "us"]))
def regional():
    step()


def test_schedule_without_function_requests_one_run_with_tags() -> None:
    every_morning = ScheduleDefinition(
        name="every_morning",
        cron_schedule="0 6 * * *",
        job=plain,
        execution_timezone="Europe/Berlin",
        run_config={"ops": {}},
        tags={"team": "data"},
    )
    tick = datetime(2026, 3, 29, 6, tzinfo=BERLIN)
    result = every_morning.evaluate_tick(tick.astimezone(UTC))
    [request] = result.run_requests
    assert request.job_name == "plain" and request.run_config == {"ops": {}}
    assert request.tags == {
        "team": "data",
        "tether/schedule_name": "every_morning",
        "tether/scheduled_execution_time": "2026-03-29T06:00:00+02:00",
    }
    assert result.skip_reason is None
    assert result.next_tick == datetime(2026, 3, 30, 6, tzinfo=BERLIN)


def test_schedule_function_gets_context_and_may_skip_or_yield() -> None:
    seen: list[ScheduleEvaluationContext] = []

    @schedule(cron_schedule="0 * * * *", jobs=[plain, other], execution_timezone="Europe/Berlin")
    def hourly(context: ScheduleEvaluationContext):
        seen.append(context)
        if context.scheduled_execution_time.hour % 2:
            yield SkipReason("odd hour")
            return
        yield RunRequest(run_key="a", job_name="plain")
        yield RunRequest(run_key="b", job_name="other", tags={"x": "1"})

    odd = hourly.evaluate_tick(datetime(2026, 1, 1, 1, tzinfo=BERLIN))
    assert odd.run_requests == [] and odd.skip_reason == "odd hour"
    even = hourly.evaluate_tick(datetime(2026, 1, 1, 2, tzinfo=BERLIN))
    assert [(r.job_name, r.run_key, r.tags.get("x")) for r in even.run_requests] == [
        ("plain", "a", None),
        ("other", "b", "1"),
    ]
    assert seen[0].schedule_name == "hourly"
    assert seen[0].scheduled_execution_time.tzinfo == BERLIN
    assert hourly.default_status is DefaultScheduleStatus.STOPPED


def test_schedule_errors_are_user_code_errors_with_the_cause() -> None:
    @schedule(cron_schedule="* * * * *", job=plain)
    def broken(context):
        raise RuntimeError("schedule exploded")

    with pytest.raises(UserCodeError, match="schedule exploded") as info:
        broken.evaluate_tick(datetime(2026, 1, 1, tzinfo=UTC))
    assert isinstance(info.value.__cause__, RuntimeError)

    @schedule(cron_schedule="* * * * *", jobs=[plain, other])
    def ambiguous():
        return RunRequest()

    with pytest.raises(UserCodeError, match="set RunRequest.job_name"):
        ambiguous.evaluate_tick(datetime(2026, 1, 1, tzinfo=UTC))

    @schedule(cron_schedule="* * * * *", job=plain)
    def wrong_type():
        return 42

    with pytest.raises(UserCodeError, match="returned int"):
        wrong_type.evaluate_tick(datetime(2026, 1, 1, tzinfo=UTC))


def test_schedule_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="cron"):
        ScheduleDefinition(name="s", cron_schedule="every day", job=plain)
    with pytest.raises(DefinitionError, match="time zone"):
        ScheduleDefinition(name="s", cron_schedule="0 0 * * *", job=plain, execution_timezone="X")
    with pytest.raises(DefinitionError, match="no job"):
        ScheduleDefinition(name="s", cron_schedule="0 0 * * *")
    with pytest.raises(DefinitionError, match="cron_schedule"):
        schedule(lambda: None)  # type: ignore[call-overload]


def test_partitioned_schedule_runs_the_partition_that_just_ended() -> None:
    daily_schedule = build_schedule_from_partitioned_job(
        daily_job, default_status=DefaultScheduleStatus.RUNNING
    )
    assert daily_schedule.cron_schedule == "0 0 * * *"
    assert daily_schedule.execution_timezone == "Europe/Berlin"
    result = daily_schedule.evaluate_tick(datetime(2026, 1, 2, tzinfo=BERLIN))
    [request] = result.run_requests
    assert (request.run_key, request.partition_key) == ("2026-01-01", "2026-01-01")
    assert request.run_config == {"ops": {}, "key": "2026-01-01"}
    assert request.tags["tether/partition"] == "2026-01-01"
    assert request.tags["tether/schedule_name"] == "daily_job_schedule"
    # At the first tick (the start itself) no partition has ended yet.
    first = daily_schedule.evaluate_tick(datetime(2026, 1, 1, tzinfo=BERLIN))
    assert first.run_requests == [] and "no partition" in (first.skip_reason or "")

    static = build_schedule_from_partitioned_job(regional, cron_schedule="0 1 * * *")
    requests = static.evaluate_tick(datetime(2026, 1, 1, 1, tzinfo=UTC)).run_requests
    assert [r.partition_key for r in requests] == ["eu", "us"]
    with pytest.raises(DefinitionError, match="static partitions need cron_schedule"):
        build_schedule_from_partitioned_job(regional)
    with pytest.raises(DefinitionError, match="not partitioned"):
        build_schedule_from_partitioned_job(plain)


def test_sensor_cursor_run_keys_and_context() -> None:
    contexts: list[SensorEvaluationContext] = []

    @sensor(job=regional, minimum_interval_seconds=10)
    def new_regions(context: SensorEvaluationContext):
        contexts.append(context)
        seen = int(context.cursor or 0)
        regions = ["eu", "us"][seen:]
        if not regions:
            yield SkipReason("nothing new")
            return
        for region in regions:
            yield RunRequest(run_key=f"region-{region}", partition_key=region)
        context.update_cursor(str(seen + len(regions)))

    defs = Definitions(sensors=[new_regions])
    last_tick = datetime(2026, 1, 1, tzinfo=UTC)
    first = defs.evaluate_sensor("new_regions", last_tick_time=last_tick, last_run_key="k0")
    assert [r.run_key for r in first.run_requests] == ["region-eu", "region-us"]
    assert first.run_requests[1].tags["tether/partition"] == "us"
    assert first.run_requests[1].tags["tether/sensor_name"] == "new_regions"
    assert first.cursor == "2"
    assert contexts[0].last_tick_time == last_tick and contexts[0].last_run_key == "k0"
    again = defs.evaluate_sensor("new_regions", cursor=first.cursor)
    assert again.run_requests == [] and again.skip_reason == "nothing new"
    assert again.cursor == "2"  # unchanged cursors come back as they were


def test_sensor_result_and_errors() -> None:
    @sensor(job=plain)
    def with_result():
        return SensorResult(run_requests=[RunRequest(run_key="x")], cursor="c9")

    @sensor(job=regional)
    def bad_partition():
        return RunRequest(run_key="x", partition_key="mars")

    @sensor(job=plain, default_status=DefaultSensorStatus.RUNNING)
    def raises(context):
        raise KeyError("missing")

    defs = Definitions(sensors=[with_result, bad_partition, raises])
    result = defs.evaluate_sensor("with_result", cursor="c1")
    assert result.cursor == "c9" and [r.run_key for r in result.run_requests] == ["x"]
    with pytest.raises(UserCodeError, match="mars"):
        defs.evaluate_sensor("bad_partition")
    with pytest.raises(UserCodeError, match="missing") as info:
        defs.evaluate_sensor("raises")
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(KeyError, match="sensors: bad_partition, raises, with_result"):
        defs.evaluate_sensor("nope")
    with pytest.raises(DefinitionError, match="minimum_interval_seconds"):
        sensor(job=plain, name="s", minimum_interval_seconds=0)(lambda: None)


def test_definitions_collect_jobs_and_reject_name_clashes() -> None:
    s = build_schedule_from_partitioned_job(daily_job)

    @sensor(job=regional)
    def watch():
        return None

    defs = Definitions(jobs=[plain], schedules=[s], sensors=[watch])
    assert list(defs.jobs) == ["plain", "daily_job", "regional"]
    assert set(defs.partitioned_jobs) == {"daily_job_partition_set", "regional_partition_set"}
    assert defs.partition_keys("regional_partition_set") == ["eu", "us"]
    run = defs.partition_run("daily_job_partition_set", "2026-01-01")
    assert run.run_config == {"ops": {}, "key": "2026-01-01"}
    with pytest.raises(PartitionKeyError):
        defs.partition_run("regional_partition_set", "mars")
    with pytest.raises(KeyError, match="partition sets"):
        defs.partition_keys("nope")

    @sensor(job=plain, name="daily_job_schedule")
    def clash():
        return None

    with pytest.raises(DefinitionError, match="already a schedule or sensor"):
        Definitions(schedules=[s], sensors=[clash])

    @job(name="plain")
    def impostor():
        step()

    with pytest.raises(DefinitionError, match="not the job of that name"):
        Definitions(jobs=[plain], sensors=[sensor(job=impostor, name="w")(lambda: None)])


def test_snapshot_describes_schedules_sensors_partition_sets_and_retries() -> None:
    @sensor(job=plain, minimum_interval_seconds=45, default_status=DefaultSensorStatus.RUNNING)
    def poke():
        return None

    defs = Definitions(
        schedules=[build_schedule_from_partitioned_job(daily_job, tags={"t": "1"})],
        sensors=[poke],
        name="repo",
    )
    snap = defs.location_snapshot("loc")
    repo = snap.repositories[0]
    [sched] = repo.schedules
    assert (sched.name, sched.cron_schedule, sched.execution_timezone, sched.job_names) == (
        "daily_job_schedule",
        "0 0 * * *",
        "Europe/Berlin",
        ["daily_job"],
    )
    assert sched.tags == {"t": "1"} and sched.default_status is InstigatorStatus.STOPPED
    [sens] = repo.sensors
    assert (sens.minimum_interval_seconds, sens.default_status) == (45, InstigatorStatus.RUNNING)
    [pset] = repo.partition_sets
    assert (pset.name, pset.job_name, pset.partitions.kind) == (
        "daily_job_partition_set",
        "daily_job",
        PartitionsKind.TIME_WINDOW,
    )
    assert pset.partitions.start_timestamp == datetime(2026, 1, 1, tzinfo=BERLIN).timestamp()
    job_snap = snap.find_job("daily_job")
    assert job_snap is not None and job_snap.partition_set_name == "daily_job_partition_set"
    retry = job_snap.ops[0].retry_policy
    assert retry is not None and (retry.max_retries, retry.delay_s) == (2, 1.5)
    assert snapshot_from_proto(snapshot_to_proto(snap)) == snap


def test_a_schedule_declares_its_overlap_policy_and_the_snapshot_carries_it() -> None:
    @schedule(cron_schedule="*/5 * * * *", job=plain, overlap_policy=ScheduleOverlapPolicy.SKIP)
    def exclusive():
        return {}

    allowing = ScheduleDefinition(name="allowing", cron_schedule="0 * * * *", job=plain)
    assert exclusive.overlap_policy is ScheduleOverlapPolicy.SKIP
    assert allowing.overlap_policy is ScheduleOverlapPolicy.ALLOW  # today's behaviour
    snap = Definitions(schedules=[exclusive, allowing], name="repo").location_snapshot("loc")
    policies = {s.name: s.overlap_policy for s in snap.repositories[0].schedules}
    assert policies == {"exclusive": "SKIP", "allowing": "ALLOW"}
    # Through the code server's gRPC contract too.
    assert snapshot_from_proto(snapshot_to_proto(snap)) == snap
    with pytest.raises(DefinitionError, match="overlap_policy must be ALLOW or SKIP"):
        ScheduleDefinition(name="s", cron_schedule="0 0 * * *", job=plain, overlap_policy="QUEUE")

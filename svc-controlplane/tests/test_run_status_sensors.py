"""Run-status sensors in the sensor daemon: the status changes it sends with a tick, read
from real run rows and events (SQLite and PostgreSQL), scoped to the sensor's deployment
and watched jobs, batched, and the control plane's cursor kept across failed ticks."""

from __future__ import annotations

import time
from typing import Any

import pytest
from controlplane_testkit import Api, Clock, snapshot_with_instigators
from sqlalchemy import select, text
from tether.controlplane.daemons import SensorDaemon
from tether.controlplane.db.models import Deployment, Instigator, InstigatorTick
from tether.controlplane.runs import lifecycle
from tether.controlplane.runs.failures import RunFailureReason
from tether.controlplane.store import run_changes
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.runs import EventType, RunEvent, RunStatus
from tether.shared.wire.snapshots import (
    InstigatorStatus,
    LocationSnapshot,
    MonitoredJob,
    RunStatusSensorSnapshot,
    SensorSnapshot,
)
from tether.shared.wire.work import (
    EvaluateSensorPayload,
    RunRequestInfo,
    SensorTickResult,
    WorkItem,
    WorkResult,
)

SENSOR = "on_failure"


def _snapshot() -> LocationSnapshot:
    """The instigators' snapshot plus a RUNNING run-failure sensor of location ``loc``
    that watches its own ``hello`` and the job ``load`` of location ``far``."""
    base = snapshot_with_instigators()
    repo = base.repositories[0]
    on_failure = SensorSnapshot(
        name=SENSOR,
        job_names=["hello"],
        minimum_interval_seconds=30,
        default_status=InstigatorStatus.RUNNING,
        run_status=RunStatusSensorSnapshot(
            statuses=[RunStatus.FAILURE],
            monitored_jobs=[
                MonitoredJob(job_name="hello"),
                MonitoredJob(location_name="far", job_name="load"),
            ],
        ),
    )
    repo = repo.model_copy(update={"sensors": [*repo.sensors, on_failure]})
    return base.model_copy(update={"repositories": [repo]})


@pytest.fixture
async def loaded(api: Api) -> Api:
    await api.load(_snapshot())
    async with api.cp.db.transaction() as session:
        session.add(Deployment(id="other", name="other", created_at=time.time()))
    return api


async def _new_run(
    api: Api, run_id: str, *, deployment: str = "default", location: str = "loc", job: str = "hello"
) -> None:
    async with api.cp.db.transaction() as session:
        lifecycle.enqueue(
            session,
            run_id=run_id,
            deployment_id=deployment,
            location_name=location,
            repository_name="repo",
            job_name=job,
            run_config={},
            tags={"team": "data", "n": run_id},
            traceparent=None,
            now=time.time(),
        )


async def _worker_ends(
    api: Api, run_id: str, end: EventType, *, deployment: str = "default", seq: int = 3
) -> None:
    """The run's worker reports its start (seq 1), its step ``a`` (failed when ``end`` is
    RUN_FAILURE) and its end (``end``, ``seq``)."""
    failed = end == EventType.RUN_FAILURE
    events = [
        RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START),
        RunEvent(
            run_id=run_id,
            seq=seq - 1,
            event_type=EventType.STEP_FAILURE if failed else EventType.STEP_SUCCESS,
            step_key="a",
            error=ErrorInfo(cls_name="ValueError", message=f"{run_id} broke") if failed else None,
        ),
        RunEvent(
            run_id=run_id,
            seq=seq,
            event_type=end,
            message="Steps failed: a." if failed else "",
            last_seq=seq,
        ),
    ]
    async with api.cp.db.transaction() as session:
        await lifecycle.store_events(session, deployment, events)


async def _run(api: Api, run_id: str, end: EventType, **where: Any) -> None:
    await _new_run(api, run_id, **where)
    await _worker_ends(api, run_id, end, deployment=where.get("deployment", "default"))


async def _tick(api: Api, sensors: SensorDaemon, clock: Clock) -> tuple[WorkItem, list[str]]:
    """Let the sensor's next tick start; return its item and the run ids it carries."""
    clock.advance(31)
    await sensors.check()
    (item,) = [
        i
        for i in await api.claim(lease_s=3600.0)
        if i.kind == "evaluate_sensor" and i.payload["sensor_name"] == SENSOR
    ]
    payload = EvaluateSensorPayload.model_validate(item.payload)
    return item, [r.run_id for r in payload.run_records]


async def _answer(
    api: Api, sensors: SensorDaemon, item: WorkItem, result: SensorTickResult
) -> None:
    await api.submit(
        WorkResult(
            id=item.id,
            work_item_id=item.id,
            kind=item.kind,
            ok=result.error is None,
            payload=result.model_dump(mode="json"),
            error=result.error,
        )
    )
    await sensors.finish_ticks(time.time())


async def _cursor(api: Api) -> str | None:
    async with api.cp.db.reading() as session:
        return await session.scalar(select(Instigator.cursor).where(Instigator.name == SENSOR))


async def _last_tick(api: Api) -> InstigatorTick:
    async with api.cp.db.reading() as session:
        tick = await session.scalar(
            select(InstigatorTick)
            .join(Instigator, Instigator.id == InstigatorTick.instigator_id)
            .where(Instigator.name == SENSOR)
            .order_by(InstigatorTick.id.desc())
            .limit(1)
        )
        assert tick is not None
        return tick


def _skipped(cursor: str | None = None) -> SensorTickResult:
    return SensorTickResult(sensor_name=SENSOR, skip_reason="nothing", cursor=cursor)


async def test_a_tick_carries_the_watched_failures_of_its_deployment_since_its_cursor(
    loaded: Api, clock: Clock
) -> None:
    api = loaded
    sensors = SensorDaemon(api.cp.db, api.cp.queue, clock=clock)
    await _run(api, "history", EventType.RUN_FAILURE)  # before the sensor's first tick

    # The first tick starts from the newest event: no history.
    first, ids = await _tick(api, sensors, clock)
    assert ids == [] and "run_records" not in first.payload
    async with api.cp.db.reading() as session:
        newest = await run_changes.newest_event_id(session)
    await _answer(api, sensors, first, _skipped())
    assert await _cursor(api) == str(newest)

    await _run(api, "failed", EventType.RUN_FAILURE)
    await _run(api, "succeeded", EventType.RUN_SUCCESS)  # another status
    await _run(api, "other-job", EventType.RUN_FAILURE, job="goodbye")  # not watched
    await _run(api, "far-load", EventType.RUN_FAILURE, location="far", job="load")  # selected
    await _run(api, "far-other", EventType.RUN_FAILURE, location="far", job="other")
    await _run(api, "elsewhere", EventType.RUN_FAILURE, location="elsewhere")
    # The same location and job in another deployment: never seen.
    await _run(api, "other-deployment", EventType.RUN_FAILURE, deployment="other")
    # Failed by the run monitor, then its worker's own RUN_FAILURE arrives late: once.
    await _new_run(api, "monitored")
    async with api.cp.db.transaction() as session:
        assert await lifecycle.fail(
            session,
            "monitored",
            "RunTimeout",
            "ran too long",
            time.time(),
            RunFailureReason.RUN_TIMEOUT,
        )
    await _worker_ends(api, "monitored", EventType.RUN_FAILURE, seq=5)
    # A canceled run's late worker failure changed nothing: not a failure.
    await _new_run(api, "canceled")
    async with api.cp.db.transaction() as session:
        await lifecycle.cancel_unlaunched(session, "canceled", time.time())
    await _worker_ends(api, "canceled", EventType.RUN_FAILURE)

    async with api.cp.db.reading() as session:
        scanned = await run_changes.newest_event_id(session)
    second, ids = await _tick(api, sensors, clock)
    assert ids == ["failed", "far-load", "monitored"]
    payload = EvaluateSensorPayload.model_validate(second.payload)
    failed, far_load, monitored = payload.run_records
    assert failed.status == RunStatus.FAILURE
    assert (failed.job_name, failed.location_name, failed.repository_name) == (
        "hello",
        "loc",
        "repo",
    )
    assert failed.tags == {"team": "data", "n": "failed"}
    assert failed.error_message == "Steps failed: a. a: failed broke"
    assert failed.start_timestamp is not None and failed.end_timestamp is not None
    assert failed.seq < far_load.seq < monitored.seq
    # The monitor's reason, and what its worker said later about its step.
    assert monitored.error_message == "run failed: ran too long a: monitored broke"
    assert payload.cursor == str(newest)

    # A failed evaluation keeps the cursor: the next tick carries the same changes.
    await _answer(
        api,
        sensors,
        second,
        SensorTickResult(sensor_name=SENSOR, error=ErrorInfo(cls_name="E", message="boom")),
    )
    assert await _cursor(api) == str(newest)
    third, ids = await _tick(api, sensors, clock)
    assert ids == ["failed", "far-load", "monitored"]

    # A successful one creates its runs and stores the control plane's cursor, not
    # whatever the evaluation sent back.
    request = RunRequestInfo(
        job_name="hello", run_key="failed:FAILURE:0", run_config={"ops": {"a": {"n": 1}}}
    )
    await _answer(
        api,
        sensors,
        third,
        SensorTickResult(sensor_name=SENSOR, run_requests=[request], cursor="made-up"),
    )
    tick = await _last_tick(api)
    assert tick.status == "SUCCESS" and len(tick.run_ids) == 1
    # Past the out-of-scope events too (up to the newest when the tick started).
    assert await _cursor(api) == str(scanned)
    fourth, ids = await _tick(api, sensors, clock)
    assert ids == []


async def test_changes_come_in_batches_and_the_rest_next_tick(loaded: Api, clock: Clock) -> None:
    api = loaded
    sensors = SensorDaemon(api.cp.db, api.cp.queue, clock=clock, run_status_batch=2)
    first, _ = await _tick(api, sensors, clock)
    await _answer(api, sensors, first, _skipped())
    for n in range(5):
        await _run(api, f"r{n}", EventType.RUN_FAILURE)

    seen: list[str] = []
    for expected in (2, 2, 1, 0):
        item, ids = await _tick(api, sensors, clock)
        assert len(ids) == expected
        seen += ids
        await _answer(api, sensors, item, _skipped(cursor=item.payload["cursor"]))
    assert seen == [f"r{n}" for n in range(5)]


async def test_a_cursor_that_is_not_an_event_id_starts_afresh(loaded: Api, clock: Clock) -> None:
    api = loaded
    sensors = SensorDaemon(api.cp.db, api.cp.queue, clock=clock)
    first, _ = await _tick(api, sensors, clock)
    await _answer(api, sensors, first, _skipped())
    async with api.cp.db.transaction() as session:
        state = await session.scalar(select(Instigator).where(Instigator.name == SENSOR))
        assert state is not None
        state.cursor = "f3.txt"  # e.g. left by a plain sensor that had this name
    await _run(api, "before", EventType.RUN_FAILURE)
    item, ids = await _tick(api, sensors, clock)
    assert ids == []
    await _answer(api, sensors, item, _skipped())
    await _run(api, "after", EventType.RUN_FAILURE)
    _, ids = await _tick(api, sensors, clock)
    assert ids == ["after"]


async def test_the_api_says_which_sensors_react_to_run_statuses(loaded: Api) -> None:
    data = await loaded.user('{ sensors(locationName: "loc") { name runStatuses } }')
    statuses = {s["name"]: s["runStatuses"] for s in data["sensors"]}
    assert statuses == {"watcher": [], "slow": [], SENSOR: ["FAILURE"]}


def test_a_batch_limit_below_one_is_refused(api: Api) -> None:
    with pytest.raises(ValueError, match="run_status_batch must be >= 1"):
        SensorDaemon(api.cp.db, api.cp.queue, run_status_batch=0)


#: A history for the plan check: runs of 20 jobs, ten events each, one run in ten failed.
PLAN_RUNS = 20_000
PLAN_SEED = [
    """
    INSERT INTO runs (id, deployment_id, location_name, repository_name, job_name, run_config,
        tags, status, created_at, started_at, ended_at, status_changed_at)
    SELECT 'r' || lpad(i::text, 9, '0'), 'default', 'loc', 'repo', 'job_' || (i % 20),
        '{}'::json, '{}'::json, CASE WHEN i % 10 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
        i, i + 1, i + 20, i + 20
    FROM generate_series(1, :runs) AS i
    """,
    """
    INSERT INTO run_events (run_id, seq, event_type, timestamp, step_key, message, data, error)
    SELECT 'r' || lpad(i::text, 9, '0'), s,
        (ARRAY['RUN_START', 'STEP_START', 'LOG', 'LOG', 'LOG', 'LOG', 'LOG', 'LOG',
               CASE WHEN i % 10 = 0 THEN 'STEP_FAILURE' ELSE 'STEP_SUCCESS' END,
               CASE WHEN i % 10 = 0 THEN 'RUN_FAILURE' ELSE 'RUN_SUCCESS' END])[s],
        i + s, CASE WHEN s BETWEEN 2 AND 9 THEN 'step' END, 'line ' || s, '{}'::json, NULL
    FROM generate_series(1, :runs) AS i, generate_series(1, 10) AS s
    """,
]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_reading_status_changes_uses_indexes_not_scans_of_the_history(api: Api) -> None:
    from test_query_plans import Statements, seq_scans

    async with api.cp.db.engine.begin() as conn:
        for statement in PLAN_SEED:
            await conn.execute(text(statement), {"runs": PLAN_RUNS})
    async with api.cp.db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
    watch = RunStatusSensorSnapshot(
        statuses=[RunStatus.FAILURE], monitored_jobs=[MonitoredJob(job_name="job_0")]
    )
    async with api.cp.db.reading() as session:
        newest = await run_changes.newest_event_id(session)
    with Statements.on(api.cp.db.engine.sync_engine) as statements:
        # A sensor that is up to date, and one far behind (a batch's worth of failures).
        for label, after in [("recent", newest - 2000), ("behind", newest // 2)]:
            statements.label = label
            async with api.cp.db.reading() as session:
                changes = await run_changes.status_changes(
                    session,
                    watch,
                    deployment_id="default",
                    own_location="loc",
                    after=after,
                    limit=100,
                    upto=newest,
                )
            assert changes.records and all(r.job_name == "job_0" for r in changes.records)
    problems = []
    async with api.cp.db.engine.connect() as conn:
        for label, statement, params in statements.captured:
            transaction = await conn.begin()
            try:
                result = await conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
                )
                (plan,) = result.scalar_one()
            finally:
                await transaction.rollback()
            one_line = " ".join(statement.split())
            print(f"{plan['Execution Time']:8.2f} ms  {label}: {one_line[:120]}")
            if scans := seq_scans(plan["Plan"]):
                problems.append(f"{label}: Seq Scan of {', '.join(scans)} in {one_line}")
    assert not problems, "\n".join(problems)

"""The scheduler, sensor and backfill daemons, on a clock the test controls, through the
real work-queue path (work items claimed and answered through the agent API)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import controlplane_testkit as testkit
import pytest
from controlplane_testkit import Api, snapshot_with_instigators
from sqlalchemy import select
from tether.controlplane.daemons import BackfillDaemon, Scheduler, SensorDaemon
from tether.controlplane.daemons.scheduler import due_ticks
from tether.controlplane.db.models import Backfill, Instigator, InstigatorTick, Run
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.snapshots import ScheduleSnapshot
from tether.shared.wire.work import (
    PartitionRunConfigResult,
    RunRequestInfo,
    ScheduleTickResult,
    SensorTickResult,
    WorkItem,
    WorkResult,
)

TIMEOUT = 120.0


class Clock(testkit.Clock):
    """The test clock, which can also jump to the next full hour."""

    def to_next_hour(self) -> float:
        """Move just past the next full UTC hour; return that hour."""
        now = self()
        hour = math.ceil(now / 3600) * 3600
        self.advance(hour - now + 1)
        return float(hour)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def loaded(api: Api) -> Api:
    await api.load(snapshot_with_instigators())
    return api


async def _claim(api: Api, kind: str) -> list[WorkItem]:
    # Leased for longer than any test runs: an item a test keeps "in flight" must not come
    # back to the next claim because a slow machine took the default lease's real minute.
    return [i for i in await api.claim(lease_s=3600.0) if i.kind == kind]


async def _answer(api: Api, item: WorkItem, result: Any, ok: bool = True) -> None:
    await api.submit(
        WorkResult(
            id=item.id,
            work_item_id=item.id,
            kind=item.kind,
            ok=ok,
            payload=result.model_dump(mode="json"),
            error=getattr(result, "error", None),
        )
    )


async def _ticks(api: Api, name: str) -> list[InstigatorTick]:
    async with api.cp.db.reading() as session:
        return list(
            (
                await session.execute(
                    select(InstigatorTick)
                    .join(Instigator, Instigator.id == InstigatorTick.instigator_id)
                    .where(Instigator.name == name)
                    .order_by(InstigatorTick.tick_time)
                )
            ).scalars()
        )


async def _run(api: Api, run_id: str) -> Run:
    async with api.cp.db.reading() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        return run


def hello(n: int = 1, run_key: str | None = None) -> RunRequestInfo:
    return RunRequestInfo(
        job_name="hello", run_key=run_key, run_config={"ops": {"a": {"n": n}}}, tags={"t": "v"}
    )


def test_due_ticks_follow_the_zone_across_dst() -> None:
    berlin_2am = ScheduleSnapshot(
        name="s", cron_schedule="0 2 * * *", execution_timezone="Europe/Berlin"
    )
    # 2026-03-29: 02:00 does not exist in Berlin; the tick fires at 03:00 CEST (01:00 UTC).
    after = datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp()
    now = datetime(2026, 3, 31, 12, tzinfo=UTC).timestamp()
    ticks = due_ticks(berlin_2am, after, now, limit=10)
    assert [datetime.fromtimestamp(t, UTC).isoformat() for t in ticks] == [
        "2026-03-29T01:00:00+00:00",
        "2026-03-30T00:00:00+00:00",
        "2026-03-31T00:00:00+00:00",
    ]
    assert len(due_ticks(berlin_2am, after, now, limit=1)) == 1


async def test_schedule_ticks_become_runs_skips_and_failures(loaded: Api, clock: Clock) -> None:
    api = loaded
    scheduler = Scheduler(api.cp.db, api.cp.queue, tick_timeout_s=TIMEOUT, clock=clock)
    await scheduler.check()  # first sight: starts from now, no past ticks
    assert await _claim(api, "evaluate_schedule") == []

    hour = clock.to_next_hour()
    await scheduler.check()
    (item,) = await _claim(api, "evaluate_schedule")
    assert item.payload == {
        "repository_name": "repo",
        "schedule_name": "hourly",
        "scheduled_timestamp": hour,
    }
    await scheduler.check()  # the same tick is never started twice
    assert await _claim(api, "evaluate_schedule") == []
    await _answer(
        api,
        item,
        ScheduleTickResult(
            schedule_name="hourly", scheduled_timestamp=hour, run_requests=[hello(run_key="k1")]
        ),
    )
    await scheduler.check()
    (tick,) = await _ticks(api, "hourly")
    assert tick.status == "SUCCESS" and tick.tick_time == hour and len(tick.run_ids) == 1
    run = await _run(api, tick.run_ids[0])
    assert run.status == "QUEUED" and run.run_key == "k1"
    assert run.tags == {"t": "v", "tether/schedule": "hourly", "tether/run_key": "k1"}
    assert run.run_config == {"ops": {"a": {"n": 1}}}
    # The tick is the root of a trace its run joins.
    assert item.traceparent is not None and run.traceparent == item.traceparent
    (launch,) = await _claim(api, "launch_run")
    assert launch.payload["run_id"] == run.id

    # A skip, a user error, a run key that already ran, and an invalid config.
    answers = [
        ScheduleTickResult(schedule_name="hourly", scheduled_timestamp=0, skip_reason="not now"),
        ScheduleTickResult(
            schedule_name="hourly",
            scheduled_timestamp=0,
            error=ErrorInfo(cls_name="ValueError", message="user code broke"),
        ),
        ScheduleTickResult(
            schedule_name="hourly", scheduled_timestamp=0, run_requests=[hello(run_key="k1")]
        ),
        ScheduleTickResult(
            schedule_name="hourly",
            scheduled_timestamp=0,
            run_requests=[hello(n="x")],  # type: ignore[arg-type]
        ),
    ]
    for answer in answers:
        clock.to_next_hour()
        await scheduler.check()
        (item,) = await _claim(api, "evaluate_schedule")
        await _answer(api, item, answer, ok=answer.error is None)
        await scheduler.check()
    ticks = await _ticks(api, "hourly")
    assert [t.status for t in ticks] == ["SUCCESS", "SKIPPED", "FAILURE", "SKIPPED", "FAILURE"]
    assert ticks[1].skip_reason == "not now"
    assert ticks[2].error["message"] == "user code broke"
    assert ticks[3].skip_reason == "every run key of this tick already has a run"
    assert ticks[4].error["cls_name"] == "InvalidRunRequest"
    assert "ops.a.n" in ticks[4].error["message"]
    assert await _claim(api, "launch_run") == []  # no run besides the first
    # The stopped schedule never ticked.
    assert await _ticks(api, "off") == []


async def test_the_scheduler_wakes_at_the_next_tick_and_when_a_result_arrives(
    loaded: Api, clock: Clock
) -> None:
    """A tick is started when it falls due, not up to an interval later, and its result
    becomes runs as soon as it is stored: the loop's interval is only the upper bound."""
    api = loaded
    scheduler = Scheduler(
        api.cp.db, api.cp.queue, interval_s=3600.0, tick_timeout_s=TIMEOUT, clock=clock
    )
    await scheduler.check()
    hour = math.ceil(clock() / 3600) * 3600
    assert scheduler.wake_at == hour  # the hourly schedule's next tick
    clock.advance(hour - clock() - 0.3)  # 0.3 s before the tick
    assert 0.25 < scheduler.pause_s() < 0.35

    loop = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(10):
            while not (items := await _claim(api, "evaluate_schedule")):
                await asyncio.sleep(0.05)
        (item,) = items
        assert item.payload["scheduled_timestamp"] == hour
        await _answer(
            api,
            item,
            ScheduleTickResult(
                schedule_name="hourly", scheduled_timestamp=hour, run_requests=[hello()]
            ),
        )
        async with asyncio.timeout(10):
            while (tick := (await _ticks(api, "hourly"))[-1]).status == "STARTED":
                await asyncio.sleep(0.05)
        assert tick.status == "SUCCESS" and len(tick.run_ids) == 1
    finally:
        scheduler.shutdown()
        await loop


async def test_after_downtime_only_the_latest_missed_tick_runs_by_default(
    loaded: Api, clock: Clock
) -> None:
    api = loaded
    scheduler = Scheduler(api.cp.db, api.cp.queue, tick_timeout_s=TIMEOUT, clock=clock)
    await scheduler.check()
    clock.advance(5 * 3600)  # the scheduler was down for five hours
    await scheduler.check()
    (item,) = await _claim(api, "evaluate_schedule")
    latest = math.floor(clock() / 3600) * 3600
    assert item.payload["scheduled_timestamp"] == latest
    ticks = await _ticks(api, "hourly")
    # The four older missed ticks are in the history, SKIPPED with the reason.
    assert [(t.tick_time, t.status) for t in ticks] == [
        *[(latest - h * 3600, "SKIPPED") for h in (4, 3, 2, 1)],
        (latest, "STARTED"),
    ]
    assert all(
        t.skip_reason.startswith("missed while the scheduler was down")
        and "catch-up policy latest: only the newest missed tick runs" in t.skip_reason
        and t.work_item_id is None
        for t in ticks[:-1]
    )
    await scheduler.check()  # nothing is recorded or evaluated twice
    assert await _claim(api, "evaluate_schedule") == []
    assert len(await _ticks(api, "hourly")) == 5


async def test_a_tick_without_result_times_out(loaded: Api, clock: Clock) -> None:
    api = loaded
    scheduler = Scheduler(api.cp.db, api.cp.queue, tick_timeout_s=TIMEOUT, clock=clock)
    await scheduler.check()
    clock.to_next_hour()
    await scheduler.check()
    clock.advance(TIMEOUT + 1)
    await scheduler.finish_ticks(clock())
    (tick,) = await _ticks(api, "hourly")
    assert tick.status == "FAILURE" and tick.error["cls_name"] == "TickTimeout"


async def test_sensors_keep_cursors_dedupe_run_keys_and_never_wait_on_each_other(
    loaded: Api, clock: Clock
) -> None:
    api = loaded
    sensors = SensorDaemon(api.cp.db, api.cp.queue, tick_timeout_s=TIMEOUT, clock=clock)
    await sensors.check()  # a new sensor ticks at once
    items = {i.payload["sensor_name"]: i for i in await _claim(api, "evaluate_sensor")}
    assert set(items) == {"watcher", "slow"}
    first = items["watcher"]
    assert first.payload["cursor"] is None and first.payload["last_tick_timestamp"] is None
    await _answer(
        api,
        first,
        SensorTickResult(
            sensor_name="watcher", run_requests=[hello(1, "f1"), hello(2, "f2")], cursor="f2"
        ),
    )
    await sensors.check()
    (tick,) = await _ticks(api, "watcher")
    assert tick.status == "SUCCESS" and tick.run_keys == ["f1", "f2"] and len(tick.run_ids) == 2
    assert (await _run(api, tick.run_ids[0])).tags["tether/sensor"] == "watcher"

    # Before the interval nothing ticks; "slow" still has its first tick in flight.
    clock.advance(10)
    await sensors.check()
    assert await _claim(api, "evaluate_sensor") == []
    clock.advance(25)
    await sensors.check()
    (second,) = await _claim(api, "evaluate_sensor")  # only watcher: slow is busy
    assert second.payload["sensor_name"] == "watcher"
    assert second.payload["cursor"] == "f2" and second.payload["last_run_key"] == "f2"
    assert second.payload["last_tick_timestamp"] == tick.tick_time
    # f2 again (already ran) and f3 (new): one run.
    await _answer(
        api,
        second,
        SensorTickResult(
            sensor_name="watcher", run_requests=[hello(2, "f2"), hello(3, "f3")], cursor="f3"
        ),
    )
    await sensors.check()
    ticks = await _ticks(api, "watcher")
    assert ticks[-1].status == "SUCCESS" and len(ticks[-1].run_ids) == 1
    assert (await _run(api, ticks[-1].run_ids[0])).run_key == "f3"

    # A failing tick keeps the cursor.
    clock.advance(31)
    await sensors.check()
    (third,) = await _claim(api, "evaluate_sensor")
    await _answer(
        api,
        third,
        SensorTickResult(
            sensor_name="watcher", error=ErrorInfo(cls_name="OSError", message="inbox gone")
        ),
        ok=False,
    )
    await sensors.check()
    ticks = await _ticks(api, "watcher")
    assert ticks[-1].status == "FAILURE" and ticks[-1].error["message"] == "inbox gone"
    clock.advance(31)
    await sensors.check()
    (fourth,) = [i for i in await _claim(api, "evaluate_sensor")]
    assert fourth.payload["cursor"] == "f3"

    # The slow sensor's tick times out; then it ticks again.
    clock.advance(TIMEOUT)
    await sensors.check()
    timed_out, again = await _ticks(api, "slow")
    assert timed_out.status == "FAILURE" and timed_out.error["cls_name"] == "TickTimeout"
    assert again.status == "STARTED"


async def test_backfill_creates_one_run_per_partition_within_its_share(
    loaded: Api, clock: Clock
) -> None:
    api = loaded
    from tether.controlplane.daemons.backfills import BackfillDaemon as _  # noqa: F401
    from tether.controlplane.store.backfills import create_backfill

    async with api.cp.db.transaction() as session:
        backfill = await create_backfill(
            session,
            deployment_id="default",
            location_name="loc",
            repository_name="repo",
            job_name="hello",
            partition_set_name="hello_partitions",
            partition_keys=["a", "b", "c"],
            tags={"who": "test"},
            now=clock(),
        )
    daemon = BackfillDaemon(api.cp.db, api.cp.queue, max_in_flight=2, clock=clock)
    await daemon.check()
    queries = await _claim(api, "get_partition_config")
    assert [q.payload["partition_key"] for q in queries] == ["a", "b"]
    await daemon.check()  # still waiting: asks nothing twice
    assert await _claim(api, "get_partition_config") == []
    for q in queries:
        key = q.payload["partition_key"]
        await _answer(
            api,
            q,
            PartitionRunConfigResult(
                partition_set_name="hello_partitions",
                partition_key=key,
                run_config={"ops": {"a": {"n": ord(key)}}},
                tags={"tether/partition": key},
            ),
        )
    await daemon.check()
    launches = await _claim(api, "launch_run")
    assert len(launches) == 2
    runs = [await _run(api, i.payload["run_id"]) for i in launches]
    assert sorted(r.partition_key for r in runs) == ["a", "b"]
    assert all(r.backfill_id == backfill.id and r.tags["who"] == "test" for r in runs)
    # Two runs in flight fill the backfill's share: "c" waits until one finishes.
    await daemon.check()
    assert await _claim(api, "get_partition_config") == []
    async with api.cp.db.transaction() as session:
        (await session.get(Run, runs[0].id)).status = "SUCCESS"  # type: ignore[union-attr]
    await daemon.check()
    (query_c,) = await _claim(api, "get_partition_config")
    await _answer(
        api,
        query_c,
        PartitionRunConfigResult(
            partition_set_name="hello_partitions",
            partition_key="c",
            error=ErrorInfo(cls_name="KeyError", message="no config for c"),
        ),
        ok=False,
    )
    await daemon.check()
    async with api.cp.db.reading() as session:
        row = await session.get(Backfill, backfill.id)
        assert row is not None
        assert row.status == "FAILED" and row.launched == 2
        assert row.error["message"] == "no config for c"

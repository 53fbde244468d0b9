"""A schedule's overlap policy: SKIP records ticks SKIPPED while its previous run still
goes; ALLOW (the default) starts them as before. Real work-queue path, test clock."""

from __future__ import annotations

import math

import controlplane_testkit as testkit
from controlplane_testkit import EVENTS, Api, example_snapshot
from sqlalchemy import select
from tether.controlplane.daemons import Scheduler
from tether.controlplane.db.models import Instigator, InstigatorTick
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.snapshots import (
    InstigatorStatus,
    LocationSnapshot,
    ScheduleOverlapPolicy,
    ScheduleSnapshot,
)
from tether.shared.wire.work import RunRequestInfo, ScheduleTickResult, WorkItem, WorkResult

SCHEDULES = """
{ schedules { name overlapPolicy } }"""


class Clock(testkit.Clock):
    """The test clock, which can also jump to the next full hour."""

    def to_next_hour(self) -> float:
        now = self()
        hour = math.ceil(now / 3600) * 3600
        self.advance(hour - now + 1)
        return float(hour)


def _snapshot() -> LocationSnapshot:
    base = example_snapshot()
    repo = base.repositories[0]
    schedules = [
        ScheduleSnapshot(
            name=name,
            cron_schedule="0 * * * *",
            job_names=["hello"],
            default_status=InstigatorStatus.RUNNING,
            overlap_policy=policy,
        )
        for name, policy in (
            ("skipping", ScheduleOverlapPolicy.SKIP),
            ("allowing", ScheduleOverlapPolicy.ALLOW),
        )
    ]
    repo = repo.model_copy(update={"schedules": schedules})
    return base.model_copy(update={"repositories": [repo]})


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


async def _evaluate_all(api: Api, scheduler: Scheduler) -> None:
    """Start due ticks and answer every evaluation with one run request."""
    await scheduler.check()
    items: list[WorkItem] = [
        i for i in await api.claim(lease_s=3600.0) if i.kind == "evaluate_schedule"
    ]
    for item in items:
        result = ScheduleTickResult(
            schedule_name=item.payload["schedule_name"],
            scheduled_timestamp=item.payload["scheduled_timestamp"],
            run_requests=[RunRequestInfo(job_name="hello")],
        )
        await api.submit(
            WorkResult(
                id=item.id,
                work_item_id=item.id,
                kind=item.kind,
                ok=True,
                payload=result.model_dump(mode="json"),
            )
        )
    await scheduler.check()


async def test_skip_records_the_reason_while_the_previous_run_goes(api: Api) -> None:
    clock = Clock()
    await api.load(_snapshot())
    policies = {s["name"]: s["overlapPolicy"] for s in (await api.user(SCHEDULES))["schedules"]}
    assert policies == {"skipping": "SKIP", "allowing": "ALLOW"}
    scheduler = Scheduler(api.cp.db, api.cp.queue, tick_timeout_s=120.0, clock=clock)
    await scheduler.check()  # first sight: ticks from now on

    clock.to_next_hour()
    await _evaluate_all(api, scheduler)
    (first,) = await _ticks(api, "skipping")
    assert first.status == "SUCCESS"
    (run_id,) = first.run_ids

    # Its run is still QUEUED an hour later: SKIP skips, ALLOW runs anyway.
    clock.to_next_hour()
    await _evaluate_all(api, scheduler)
    skipping = await _ticks(api, "skipping")
    assert [t.status for t in skipping] == ["SUCCESS", "SKIPPED"]
    assert skipping[1].skip_reason == (
        f"skipped: run {run_id} of this schedule is still QUEUED and the schedule's "
        "overlap policy is SKIP"
    )
    assert [t.status for t in await _ticks(api, "allowing")] == ["SUCCESS", "SUCCESS"]

    # Once the run ended, the next tick runs again.
    events = [
        RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START),
        RunEvent(run_id=run_id, seq=2, event_type=EventType.RUN_SUCCESS),
    ]
    await api.agent(EVENTS, items=[e.model_dump(mode="json") for e in events])
    clock.to_next_hour()
    await _evaluate_all(api, scheduler)
    assert [t.status for t in await _ticks(api, "skipping")] == ["SUCCESS", "SKIPPED", "SUCCESS"]
    assert [t.status for t in await _ticks(api, "allowing")] == ["SUCCESS"] * 3

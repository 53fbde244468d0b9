"""The scheduler: cron ticks of RUNNING schedules become evaluations, then runs.

Each check, for every schedule of every loaded location:

1. its due ticks are the cron ticks (in the schedule's time zone, DST rules of
   :mod:`tether.shared.runtime.cron`, the very ones the SDK uses) after the last tick it evaluated
   and at or before now. Ticks noticed more than ``catchup_grace_s`` late were missed
   (the scheduler was down); the schedule's catch-up policy (its own, else its deployment's
   ``schedule_catchup`` setting, else the control plane's: ``latest``, ``all`` up to
   ``max_catchup_ticks``, ``none``; see :mod:`.catchup`) picks which of them are still
   evaluated. Every other missed tick is recorded SKIPPED with the reason, so the tick
   history shows the outage.
2. each tick to evaluate is recorded STARTED with an ``evaluate_schedule`` work item (same
   transaction); the tick's UNIQUE(schedule, tick time) makes this idempotent.
3. ticks whose result arrived are finished: runs created (validated, deduplicated on run
   key, tagged ``tether/schedule``), SUCCESS with run ids, SKIPPED with the user's reason,
   FAILURE with the user's error. A tick with no result after ``tick_timeout_s`` fails.

A schedule whose overlap policy is SKIP (``ScheduleSnapshot.overlap_policy``, declared in
the SDK) does not start a tick while a run it created (or a retry of one: the retry
carries its tags) is unfinished: the tick is recorded SKIPPED, naming that run. ALLOW, the
default, starts it anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tether.controlplane.daemons.catchup import (
    MAX_RECORDED_MISSED,
    CatchupPolicy,
    older_not_listed,
    plan_ticks,
    skip_reason,
)
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.daemons.ticks import (
    SCHEDULE_TICKS,
    finish_ticks,
    record_skipped_ticks,
    start_tick,
)
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import (
    DeploymentSettingsRow,
    Instigator,
    InstigatorKind,
    InstigatorStatus,
)
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.store import deployment_settings, instigators, locations, retries
from tether.shared.runtime import cron
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.snapshots import ScheduleOverlapPolicy, ScheduleSnapshot
from tether.shared.wire.work import EvaluateSchedulePayload, WorkKind

log = logging.getLogger(__name__)


def due_ticks(schedule: ScheduleSnapshot, after: float, now: float, limit: int) -> list[float]:
    """The newest ``limit`` ticks of ``schedule`` in ``(after, now]``, oldest first."""
    ticks: list[float] = []
    before = datetime.fromtimestamp(now, UTC)
    for tick in cron.ticks_before(schedule.cron_schedule, schedule.execution_timezone, before):
        at = tick.timestamp()
        if at <= after or len(ticks) >= limit:
            break
        ticks.append(at)
    return ticks[::-1]


def next_tick(schedule: ScheduleSnapshot, after: float) -> float | None:
    """The first tick of ``schedule`` after ``after`` (None if its cron string is unusable)."""
    try:
        start = datetime.fromtimestamp(after, UTC)
        ticks = cron.ticks_after(schedule.cron_schedule, schedule.execution_timezone, start)
        return next(ticks).timestamp()
    except cron.CronError:
        return None


class Scheduler(PeriodicDaemon):
    """Evaluates the due ticks of RUNNING schedules and creates their runs.

    Args:
        db: the metadata DB.
        queue: the work queue.
        interval_s: how often to check (well under a minute: cron's resolution).
        catchup: the catch-up policy of schedules that have none of their own.
        max_catchup_ticks: with policy ``all``, most missed ticks evaluated per schedule.
        catchup_grace_s: a tick noticed at most this late is on time, not missed.
        tick_timeout_s: a tick with no result this long after it started fails.
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        *,
        interval_s: float = 5.0,
        catchup: CatchupPolicy | str = CatchupPolicy.LATEST,
        max_catchup_ticks: int = 5,
        catchup_grace_s: float = 60.0,
        tick_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("scheduler", interval_s=interval_s, clock=clock)
        self._db = db
        self._queue = queue
        self.catchup = CatchupPolicy(catchup)
        self.max_catchup_ticks = max(1, max_catchup_ticks)
        self.catchup_grace_s = catchup_grace_s
        self.tick_timeout_s = tick_timeout_s
        # An evaluation's result turns into runs at once, not at the next interval.
        queue.watch_results([WorkKind.EVALUATE_SCHEDULE], self.wake)

    def policy_of(self, state: Instigator, deployment_default: str | None = None) -> CatchupPolicy:
        """The catch-up policy of a schedule: its own, else its deployment's
        (``deployment_default``, its ``schedule_catchup`` setting), else this scheduler's."""
        for policy in (state.catchup, deployment_default):
            if policy:
                try:
                    return CatchupPolicy(policy)
                except ValueError:
                    log.warning("schedule %s: unknown catch-up policy %r", state.name, policy)
        return self.catchup

    async def check(self) -> None:
        """Start due ticks, then finish the ticks whose results arrived (or timed out)."""
        now = self.now()
        await self.start_due_ticks(now)
        await self.finish_ticks(now)

    async def start_due_ticks(self, now: float) -> int:
        """Record and queue every due tick of every RUNNING schedule; return how many.

        Also sets ``wake_at`` to the next tick of any RUNNING schedule, so the next check
        starts that tick on time rather than up to an interval late.
        """
        started = 0
        upcoming: list[float] = []
        async with self._db.transaction() as session:
            definitions = await instigators.all_definitions(session, InstigatorKind.SCHEDULE)
            own = await deployment_settings.all_own_settings(session)
            configs: dict[tuple[str, str], LocationConfig] = {}
            for definition in definitions:
                schedule = definition.schedule
                assert schedule is not None
                state = await instigators.ensure_state(session, definition, now)
                if state.status != InstigatorStatus.RUNNING:
                    continue
                following = next_tick(schedule, now)
                if following is not None:
                    upcoming.append(following)
                if state.last_tick_at is None:
                    # Its location was removed and came back: tick from now on.
                    state.last_tick_at = now
                    state.updated_at = now
                    continue
                after = state.last_tick_at
                # One more than can be recorded, to know whether older ones were left out.
                limit = max(MAX_RECORDED_MISSED, self.max_catchup_ticks) + 1
                try:
                    due = due_ticks(schedule, after, now, limit)
                except cron.CronError as err:
                    log.warning("schedule %s: %s", definition.name, err)
                    continue
                if not due:
                    continue
                truncated = len(due) == limit
                if truncated:
                    due = due[1:]
                policy = self.policy_of(state, _catchup_of(own.get(state.deployment_id)))
                plan = plan_ticks(
                    due,
                    now,
                    policy,
                    max_ticks=self.max_catchup_ticks,
                    grace_s=self.catchup_grace_s,
                )
                if plan.skip:
                    reasons = [
                        skip_reason(t, now, policy, max_ticks=self.max_catchup_ticks)
                        for t in plan.skip
                    ]
                    if truncated:
                        reasons[0] += older_not_listed(after)
                    await record_skipped_ticks(session, state, plan.skip, reasons, now)
                    caught = [t for t in plan.launch if now - t > self.catchup_grace_s]
                    log.warning(
                        "schedule %s missed %d tick(s)%s while the scheduler was down; "
                        "catch-up policy %s evaluates %d of them",
                        definition.name,
                        len(plan.skip) + len(caught),
                        " (and older)" if truncated else "",
                        policy,
                        len(caught),
                    )
                # Skipped ticks count as handled: the next check starts after the newest.
                state.last_tick_at = max(due[-1], state.last_tick_at or 0.0)
                state.updated_at = now
                ticks = plan.launch
                if not ticks:
                    continue
                if schedule.overlap_policy == ScheduleOverlapPolicy.SKIP:
                    going = await retries.unfinished_run_of(
                        session,
                        definition.deployment_id,
                        definition.location_name,
                        instigators.SCHEDULE_TAG,
                        definition.name,
                    )
                    if going is not None:
                        reason = (
                            f"skipped: run {going[0]} of this schedule is still {going[1]} "
                            "and the schedule's overlap policy is SKIP"
                        )
                        await record_skipped_ticks(
                            session, state, ticks, [reason] * len(ticks), now
                        )
                        continue
                key = (definition.deployment_id, definition.location_name)
                if key not in configs:
                    location = await locations.get_location(session, *key)
                    assert location is not None
                    configs[key] = LocationConfig.model_validate(location.config)
                for tick in ticks:
                    payload = EvaluateSchedulePayload(
                        repository_name=definition.repository_name,
                        schedule_name=definition.name,
                        scheduled_timestamp=tick,
                    )
                    item = await start_tick(
                        session,
                        self._queue,
                        state,
                        tick_time=tick,
                        kind=WorkKind.EVALUATE_SCHEDULE,
                        location=configs[key],
                        payload=payload,
                        now=now,
                        timeout_s=self.tick_timeout_s,
                    )
                    started += item is not None
        self.wake_at = min(upcoming, default=None)
        return started

    async def finish_ticks(self, now: float) -> int:
        """Apply arrived results and time out silent ticks; return how many ticks finished."""
        return await finish_ticks(
            self._db, self._queue, SCHEDULE_TICKS, now=now, timeout_s=self.tick_timeout_s
        )


def _catchup_of(row: DeploymentSettingsRow | None) -> str | None:
    return row.schedule_catchup if row is not None else None

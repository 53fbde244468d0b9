"""The sensor daemon: each RUNNING sensor is evaluated every ``minimum_interval_seconds``.

A sensor has at most one tick in flight: the next is queued only once the previous one
finished (or timed out), so a slow sensor only slows itself. Evaluations are work items
answered by the agent asynchronously; this daemon never waits on one, so a slow or failing
sensor delays neither other sensors nor run launches (the launcher also gives sensor
evaluations slots of their own).

Each tick sends the sensor's cursor, the time of its previous tick and the run key of the
last run it asked for. On its result: runs are created (validated like ``launchRun``,
tagged ``tether/sensor``, deduplicated on run key among this sensor's runs), the new
cursor is stored, and the tick is recorded SUCCESS / SKIPPED / FAILURE. A failed tick keeps
the old cursor, so the next tick retries the same work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.daemons.ticks import (
    Outcome,
    answered_ticks,
    claim_tick,
    create_runs,
    finish_tick,
    overdue_ticks,
    requests_failed,
    result_error,
    start_tick,
    tick_traceparent,
)
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import (
    Instigator,
    InstigatorKind,
    InstigatorStatus,
    InstigatorTick,
    TickStatus,
    WorkResultRow,
)
from tether.controlplane.store import instigators, locations
from tether.controlplane.store.instigators import SENSOR_TAG
from tether.controlplane.workqueue import WorkQueue
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import EvaluateSensorPayload, SensorTickResult, WorkKind

log = logging.getLogger(__name__)


class SensorDaemon(PeriodicDaemon):
    """Evaluates RUNNING sensors at their interval and creates the runs they ask for.

    Args:
        db: the metadata DB.
        queue: the work queue.
        interval_s: how often to check (the finest sensor interval it can honour).
        tick_timeout_s: a tick with no result this long after it started fails (and the
            sensor's next tick may start).
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        *,
        interval_s: float = 1.0,
        tick_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("sensor daemon", interval_s=interval_s, clock=clock)
        self._db = db
        self._queue = queue
        self.tick_timeout_s = tick_timeout_s
        # An evaluation's result turns into runs at once, not at the next interval.
        queue.watch_results([WorkKind.EVALUATE_SENSOR], self.wake)

    async def check(self) -> None:
        """Finish ticks whose results arrived (or timed out), then start due ones."""
        now = self.now()
        # Finishing first frees sensors whose tick just ended to tick again this round.
        await self.finish_ticks(now)
        await self.start_due_ticks(now)

    async def start_due_ticks(self, now: float) -> int:
        """Queue an evaluation of every RUNNING sensor whose interval passed; return how many.

        Also sets ``wake_at`` to when the next sensor's interval passes.
        """
        started = 0
        upcoming: list[float] = []
        async with self._db.transaction() as session:
            for definition in await instigators.all_definitions(session, InstigatorKind.SENSOR):
                sensor = definition.sensor
                assert sensor is not None
                state = await instigators.ensure_state(session, definition, now)
                if state.status != InstigatorStatus.RUNNING:
                    continue
                last = state.last_tick_at
                if last is not None and now - last < sensor.minimum_interval_seconds:
                    upcoming.append(last + sensor.minimum_interval_seconds)
                    continue
                if await self._in_flight(session, state):
                    continue
                # Optimistic: only the process that moves last_tick_at starts the tick.
                moved = await session.execute(
                    update(Instigator)
                    .where(
                        Instigator.id == state.id,
                        Instigator.last_tick_at.is_(None)
                        if last is None
                        else Instigator.last_tick_at == last,
                    )
                    .values(last_tick_at=now, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                if not moved.rowcount:
                    continue
                location = await locations.get_location(
                    session, definition.deployment_id, definition.location_name
                )
                assert location is not None
                payload = EvaluateSensorPayload(
                    repository_name=definition.repository_name,
                    sensor_name=definition.name,
                    cursor=state.cursor,
                    last_tick_timestamp=last,
                    last_run_key=await self._last_run_key(session, state),
                    current_timestamp=now,
                )
                item = await start_tick(
                    session,
                    self._queue,
                    state,
                    tick_time=now,
                    kind=WorkKind.EVALUATE_SENSOR,
                    location=LocationConfig.model_validate(location.config),
                    payload=payload,
                    now=now,
                    timeout_s=self.tick_timeout_s,
                )
                started += item is not None
        self.wake_at = min(upcoming, default=None)
        return started

    async def _in_flight(self, session: AsyncSession, state: Instigator) -> bool:
        tick = await session.scalar(
            select(InstigatorTick.id)
            .where(
                InstigatorTick.instigator_id == state.id,
                InstigatorTick.status == str(TickStatus.STARTED),
            )
            .limit(1)
        )
        return tick is not None

    async def _last_run_key(self, session: AsyncSession, state: Instigator) -> str | None:
        rows = await session.execute(
            select(InstigatorTick.run_keys)
            .where(
                InstigatorTick.instigator_id == state.id,
                InstigatorTick.status == str(TickStatus.SUCCESS),
            )
            .order_by(InstigatorTick.tick_time.desc())
            .limit(1)
        )
        keys = rows.scalar_one_or_none()
        return keys[-1] if keys else None

    async def finish_ticks(self, now: float) -> int:
        """Apply arrived results and time out silent ticks; return how many ticks finished."""
        finished = 0
        async with self._db.transaction() as session:
            for tick, state, result in await answered_ticks(session, InstigatorKind.SENSOR):
                if not await claim_tick(session, tick, now):
                    continue
                traceparent = await tick_traceparent(session, tick)
                outcome = await self._outcome(session, state, result, now, traceparent)
                if outcome.cursor is not None and outcome.status != TickStatus.FAILURE:
                    state.cursor = outcome.cursor
                    state.updated_at = now
                await finish_tick(session, tick, outcome, now)
                finished += 1
            for tick, _state in await overdue_ticks(
                session, InstigatorKind.SENSOR, now - self.tick_timeout_s
            ):
                if not await claim_tick(session, tick, now):
                    continue
                error = ErrorInfo(
                    cls_name="TickTimeout",
                    message=(
                        f"no agent evaluated this sensor tick within {self.tick_timeout_s:g}s "
                        "(is an agent running for this location's substrate?)"
                    ),
                )
                await finish_tick(session, tick, Outcome(TickStatus.FAILURE, error=error), now)
                finished += 1
        return finished

    async def _outcome(
        self,
        session: AsyncSession,
        state: Instigator,
        result: WorkResultRow,
        now: float,
        traceparent: str | None,
    ) -> Outcome:
        try:
            tick = SensorTickResult.model_validate(result.payload)
        except ValueError:
            return Outcome(TickStatus.FAILURE, error=result_error(result))
        if tick.error is not None:
            return Outcome(TickStatus.FAILURE, error=tick.error)
        if not tick.run_requests:
            return Outcome(
                TickStatus.SKIPPED,
                skip_reason=tick.skip_reason or "no run requested",
                cursor=tick.cursor,
            )
        run_ids, run_keys, problems = await create_runs(
            session,
            self._queue,
            state,
            tick.run_requests,
            owner_tag=SENSOR_TAG,
            traceparent=traceparent,
            now=now,
        )
        if problems:
            # The cursor is kept back: the next tick asks again, and run keys dedupe the
            # requests that did make runs.
            return Outcome(
                TickStatus.FAILURE,
                run_ids=run_ids,
                run_keys=run_keys,
                error=requests_failed(problems),
            )
        if not run_ids:
            return Outcome(
                TickStatus.SKIPPED,
                run_keys=run_keys,
                skip_reason="every run key of this tick already has a run",
                cursor=tick.cursor,
            )
        return Outcome(TickStatus.SUCCESS, run_ids=run_ids, run_keys=run_keys, cursor=tick.cursor)

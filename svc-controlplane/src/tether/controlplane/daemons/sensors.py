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

from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.daemons.ticks import SENSOR_TICKS, finish_ticks, start_tick
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import InstigatorKind, InstigatorStatus
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.store import instigators, locations, ticks
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import EvaluateSensorPayload, WorkKind

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
                if await ticks.has_started(session, state.id):
                    continue
                # Optimistic: only the process that moves last_tick_at starts the tick.
                if not await ticks.move_last_tick(session, state.id, last, now):
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
                    last_run_key=await ticks.last_run_key(session, state.id),
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

    async def finish_ticks(self, now: float) -> int:
        """Apply arrived results and time out silent ticks; return how many ticks finished."""
        return await finish_ticks(
            self._db, self._queue, SENSOR_TICKS, now=now, timeout_s=self.tick_timeout_s
        )

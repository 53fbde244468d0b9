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

A run-status sensor's tick also carries the status changes of the runs it watches since
its cursor (at most ``run_status_batch``; the rest go with the next tick), read from the
run events of its own deployment (:mod:`tether.controlplane.store.run_changes`). Its
cursor is the control plane's: the id of the last event read, chosen when the tick starts
and stored only if the tick does not fail. It never passes an event id that a transaction
still writing might commit below it (:class:`~tether.controlplane.store.run_changes.EventHorizon`).
A new one starts from the newest settled event: it reacts to changes from when it was first
evaluated on, not to history.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.daemons.ticks import SENSOR_TICKS, finish_ticks, start_tick
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import InstigatorKind, InstigatorStatus
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.store import instigators, locations, run_changes, ticks
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.snapshots import SensorSnapshot
from tether.shared.wire.work import EvaluateSensorPayload, RunStatusRecord, WorkKind

log = logging.getLogger(__name__)

#: At most this many status changes go with one run-status sensor tick.
RUN_STATUS_BATCH = 100


class SensorDaemon(PeriodicDaemon):
    """Evaluates RUNNING sensors at their interval and creates the runs they ask for.

    Args:
        db: the metadata DB.
        queue: the work queue.
        interval_s: how often to check (the finest sensor interval it can honour).
        tick_timeout_s: a tick with no result this long after it started fails (and the
            sensor's next tick may start).
        clock: the current time in epoch seconds (tests pass a controllable one).
        run_status_batch: at most this many status changes per run-status sensor tick.
    """

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        *,
        interval_s: float = 1.0,
        tick_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        run_status_batch: int = RUN_STATUS_BATCH,
    ) -> None:
        super().__init__("sensor daemon", interval_s=interval_s, clock=clock)
        if run_status_batch < 1:
            raise ValueError(f"run_status_batch must be >= 1, got {run_status_batch}")
        self._db = db
        self._queue = queue
        self.tick_timeout_s = tick_timeout_s
        self.run_status_batch = run_status_batch
        # Which event ids run-status sensors may read (none still to be committed below).
        self._horizon = run_changes.EventHorizon()
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
        # Read-only and before the writing transaction: one that writes has a transaction
        # id of its own, and waits on nobody here.
        async with self._db.reading() as session:
            await self._horizon.advance(session)
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
                records, cursor = await self._run_status_changes(
                    session, sensor, state.deployment_id, state.location_name, state.cursor
                )
                payload = EvaluateSensorPayload(
                    repository_name=definition.repository_name,
                    sensor_name=definition.name,
                    cursor=state.cursor,
                    last_tick_timestamp=last,
                    last_run_key=await ticks.last_run_key(session, state.id),
                    current_timestamp=now,
                    run_records=records,
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
                    cursor=cursor,
                )
                started += item is not None
        self.wake_at = min(upcoming, default=None)
        return started

    async def _run_status_changes(
        self,
        session: AsyncSession,
        sensor: SensorSnapshot,
        deployment_id: str,
        location_name: str,
        stored_cursor: str | None,
    ) -> tuple[list[RunStatusRecord], str | None]:
        """A run-status sensor's next batch of changes and the cursor after it
        (([], None) for a plain sensor)."""
        if sensor.run_status is None:
            return [], None
        settled = self._horizon.settled
        after = run_changes.as_cursor(stored_cursor)
        if settled is None:
            # Not known yet (the first pass of a busy database): nothing new this tick.
            return [], stored_cursor
        if after is None:
            # First tick: from now on, not the deployment's whole history.
            return [], str(settled)
        changes = await run_changes.status_changes(
            session,
            sensor.run_status,
            deployment_id=deployment_id,
            own_location=location_name,
            after=after,
            limit=self.run_status_batch,
            upto=settled,
        )
        return changes.records, str(changes.cursor)

    async def finish_ticks(self, now: float) -> int:
        """Apply arrived results and time out silent ticks; return how many ticks finished."""
        return await finish_ticks(
            self._db, self._queue, SENSOR_TICKS, now=now, timeout_s=self.tick_timeout_s
        )

"""The run monitor: runs that will never finish on their own, or overran, are failed, with
the reason.

Three cases, checked every ``run_monitor_interval_s``:

- a run stuck in STARTING longer than its location's ``run_start_timeout_s`` (else the
  control plane's): its worker was launched (or the launch was claimed) but never reported
  RUN_START — the worker died before it could, or the agent lost it (``START_TIMEOUT``);
- a run STARTED longer ago than its ``tether/max_runtime`` tag says (else the control
  plane's ``run_max_runtime_s``): it is failed (``RUN_TIMEOUT``) and its launcher is asked
  to interrupt the worker (a ``terminate_run`` item, as termination does); whatever the
  worker reports after that cannot move the run out of FAILURE;
- a run whose launcher reported its worker exited (a ``run_worker_exited`` result) but that
  is still unfinished ``worker_exit_grace_s`` later, and none of whose events was stored in
  that time either. A non-zero exit already fails the run when the report arrives; a clean
  exit (code 0) waits, because the worker's terminal event may still be travelling: behind
  a backlog of its events after an outage, the grace counts from the last one stored; and
  while other runs' events of its deployment are still being stored (its own may all be
  queued behind them), up to ``worker_exit_backlog_max_s`` after the exit.

A fourth case is a run still QUEUED whose ``launch_run`` item was dispatched to the agent
but answered by no launcher within ``launch_answer_timeout_s`` of its queuing (the NATS
message was lost, or dead-lettered, or every launcher that took it died): it holds its
slot under the concurrency limits and would wait forever. The item is offered again once
(PENDING: the poller leases it as a new attempt, a new NATS message; the launchers'
run claim keeps it launched at most once, and a launcher whose earlier delivery launched
it answers again). That is recorded as the result row ``<launch item id>.redispatch`` (the
one insert of that id wins: two monitors offer it once) and a LOG event on the run. Still
unanswered ``launch_answer_timeout_s`` after that, the item is withdrawn and the run
failed (``LAUNCH_FAILED``, ``RunLaunchUnanswered``).

Each is marked FAILURE with an ENGINE_ERROR event saying why, then RUN_FAILURE
(:func:`tether.controlplane.runs.lifecycle.fail`). The check is one conditional update per
run (a run that finished meanwhile is left alone), so running it in several control plane
processes at once is harmless. Like every daemon it is a
:class:`~tether.controlplane.daemons.loop.PeriodicDaemon`.

A worker can also vanish without anyone reporting its exit (its launcher was killed, the
host rebooted). So every ``health_interval_s`` the monitor asks the launcher about each
launched, unfinished run (a ``check_run_health`` work item, one per run per interval); a
"not running" answer counts as an exit report of unknown code (see
:mod:`tether.controlplane.runs.lifecycle`), which the second case above then settles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.db.engine import Database, changes
from tether.controlplane.db.models import WorkStatus
from tether.controlplane.errors import BadInputError
from tether.controlplane.queue.workqueue import WORK_QUEUED, WorkQueue
from tether.controlplane.runs import lifecycle
from tether.controlplane.runs.failures import RunFailureReason
from tether.controlplane.runs.policies import max_runtime_of
from tether.controlplane.store import locations, retries, runs, workitems
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import EventType, RunStatus
from tether.shared.wire.work import RunHealthPayload, RunWorkerExited, WorkKind

log = logging.getLogger(__name__)

#: Statuses the monitor may fail (terminal ones never change; CANCELING is the terminator's).
_UNFINISHED = [RunStatus.STARTING, RunStatus.STARTED]
#: Statuses of runs whose worker was launched and may have vanished.
_LAUNCHED = [*_UNFINISHED, RunStatus.CANCELING]
#: What the id of a launch item's re-dispatch record adds to the item's id.
REDISPATCH_SUFFIX = ".redispatch"
#: The kind of that record (the control plane's own, never an agent's result kind).
REDISPATCH_KIND = "launch_redispatched"


@dataclass(frozen=True)
class FailedRun:
    """A run the monitor failed, and why."""

    run_id: str
    reason: str


class RunMonitor(PeriodicDaemon):
    """Fails runs that are stuck in STARTING or whose worker is gone.

    Args:
        db: the metadata DB.
        start_timeout_s: longest a run may stay in STARTING.
        worker_exit_grace_s: how long after a reported worker exit a run may stay unfinished.
        worker_exit_backlog_max_s: how long after a clean exit a run may stay unfinished
            while its deployment's events are still being stored.
        interval_s: how often :meth:`run` checks.
        queue: where health checks are queued (None: no health checks).
        health_interval_s: how often each launched, unfinished run's worker is checked.
        max_runtime_s: longest a run without a ``tether/max_runtime`` tag may stay STARTED
            (None: unbounded).
        launch_answer_timeout_s: how long a dispatched ``launch_run`` item may stay
            unanswered before it is offered again, and then before its run is failed.
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        *,
        start_timeout_s: float,
        worker_exit_grace_s: float,
        interval_s: float,
        worker_exit_backlog_max_s: float = 900.0,
        queue: WorkQueue | None = None,
        health_interval_s: float = 120.0,
        max_runtime_s: float | None = None,
        launch_answer_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("run monitor", interval_s=interval_s, clock=clock)
        self._db = db
        self._queue = queue
        self.health_interval_s = health_interval_s
        self.start_timeout_s = start_timeout_s
        self.worker_exit_grace_s = worker_exit_grace_s
        self.worker_exit_backlog_max_s = max(worker_exit_backlog_max_s, worker_exit_grace_s)
        self.max_runtime_s = max_runtime_s
        self.launch_answer_timeout_s = launch_answer_timeout_s

    async def check(self) -> list[FailedRun]:
        """Fail every run that is overdue now; return them."""
        now = self.now()
        async with self._db.transaction() as session:
            failed = await self._launch_unanswered(session, now)
            failed += await self._stuck_starting(session, now)
            failed += await self._overran(session, now)
            failed += await self._worker_gone(session, now, {f.run_id for f in failed})
            if self._queue is not None:
                await self._ask_health(session, self._queue, now)
        for run in failed:
            log.warning("failed run %s: %s", run.run_id, run.reason)
        return failed

    async def _ask_health(self, session: AsyncSession, queue: WorkQueue, now: float) -> None:
        # One item per run per interval, named by the interval: several monitors (or a
        # check repeated within the interval) ask once; of two monitors inserting it at
        # once, the second inserts nothing (ON CONFLICT DO NOTHING) instead of failing.
        window = int(now // self.health_interval_s)
        launched = await runs.unchanged_since(session, _LAUNCHED, now - self.health_interval_s)
        for run_id, deployment_id, traceparent in launched:
            item_id = f"health-{run_id}-{window}"
            launch = await lifecycle.launch_item(session, run_id)
            if launch is None or await workitems.get_item(session, item_id) is not None:
                continue
            await queue.enqueue_if_absent(
                session,
                deployment_id=deployment_id,
                kind=WorkKind.CHECK_RUN_HEALTH,
                location=LocationConfig.model_validate(launch.location),
                # Only a launcher of the domain that launched it can see its worker.
                payload=RunHealthPayload(
                    run_id=run_id, owner=await lifecycle.run_owner(session, run_id)
                ),
                traceparent=traceparent,
                item_id=item_id,
                # A check nobody answers soon is worthless: the next interval asks again.
                expires_at=now + self.health_interval_s,
            )

    async def _start_timeout(
        self, session: AsyncSession, key: tuple[str, str], cache: dict[tuple[str, str], float]
    ) -> float:
        # The location's own bound (its config), else the control plane's.
        if key not in cache:
            location = await locations.get_location(session, *key)
            own = None
            if location is not None:
                own = LocationConfig.model_validate(location.config).run_start_timeout_s
            cache[key] = own or self.start_timeout_s
        return cache[key]

    async def _launch_unanswered(self, session: AsyncSession, now: float) -> list[FailedRun]:
        bound = self.launch_answer_timeout_s
        failed: list[FailedRun] = []
        for run_id, _, status, queued_at, offered_at in await runs.unanswered_launches(
            session, REDISPATCH_SUFFIX
        ):
            item_id = runs.launch_item_id(run_id)
            if offered_at is None:
                # Counted from its queuing: the control plane does not know when the
                # poller put it on NATS (soon after, while the agent is connected).
                if status == WorkStatus.DISPATCHED and queued_at < now - bound:
                    await self._redispatch(session, run_id, item_id, now)
                continue
            if offered_at >= now - bound:
                continue
            # Withdrawn first, conditionally: a result storing at the same moment wins,
            # and then the run is not failed.
            if not await workitems.withdraw_unanswered(session, item_id):
                continue
            reason = (
                f"no launcher answered the run's launch within {bound:g}s, twice (it was "
                "dispatched to the agent, then once more): the agent lost it, or its "
                "launchers are down"
            )
            if await lifecycle.fail(
                session, run_id, "RunLaunchUnanswered", reason, now, RunFailureReason.LAUNCH_FAILED
            ):
                failed.append(FailedRun(run_id, reason))
        return failed

    async def _redispatch(
        self, session: AsyncSession, run_id: str, item_id: str, now: float
    ) -> None:
        # The record first: of two monitors, the one whose insert wins offers the item.
        if not await workitems.insert_record(
            session,
            record_id=item_id + REDISPATCH_SUFFIX,
            item_id=item_id,
            kind=REDISPATCH_KIND,
            payload={"reason": "launch unanswered"},
            created_at=now,
        ):
            return
        if not await workitems.redispatch(session, item_id):
            return
        message = (
            f"no launcher answered the run's launch within {self.launch_answer_timeout_s:g}s; "
            "dispatched it once more"
        )
        runs.add_control_event(session, run_id, EventType.LOG, message=message, timestamp=now)
        log.warning("run %s: %s", run_id, message)
        changes(session, WORK_QUEUED)

    async def _stuck_starting(self, session: AsyncSession, now: float) -> list[FailedRun]:
        failed: list[FailedRun] = []
        bounds: dict[tuple[str, str], float] = {}
        for run in await retries.runs_in(session, [RunStatus.STARTING]):
            bound = await self._start_timeout(
                session, (run.deployment_id, run.location_name), bounds
            )
            if run.status_changed_at is None or run.status_changed_at >= now - bound:
                continue
            reason = (
                f"the run stayed in STARTING for more than {bound:g}s: its run worker never "
                "reported that it started (it may have died at launch, or the agent lost it)"
            )
            if await lifecycle.fail(
                session, run.id, "RunStartTimeout", reason, now, RunFailureReason.START_TIMEOUT
            ):
                failed.append(FailedRun(run.id, reason))
        return failed

    async def _overran(self, session: AsyncSession, now: float) -> list[FailedRun]:
        failed: list[FailedRun] = []
        for run in await retries.runs_in(session, [RunStatus.STARTED]):
            try:
                bound = max_runtime_of(run.tags, self.max_runtime_s)
            except BadInputError as err:  # a tag no launch checked (a schedule's)
                log.warning("run %s: %s; not bounding its runtime", run.id, err)
                continue
            # started_at is the worker's clock (its RUN_START); the control plane's status
            # clock is the fallback when the run has none.
            began = run.started_at if run.started_at is not None else run.status_changed_at
            if bound is None or began is None or now - began <= bound:
                continue
            reason = (
                f"the run exceeded its maximum runtime of {bound:g}s (STARTED {now - began:.0f}s "
                "ago): it was terminated"
            )
            if await lifecycle.fail(
                session, run.id, "RunTimeout", reason, now, RunFailureReason.RUN_TIMEOUT
            ):
                stored = await runs.get_run(session, run.deployment_id, run.id)
                if stored is not None and self._queue is not None:
                    # Stop the worker; the run already ended FAILURE, so its RUN_CANCELED
                    # (or exit) that follows changes nothing.
                    await lifecycle.request_interrupt(session, self._queue, stored)
                failed.append(FailedRun(run.id, reason))
        return failed

    async def _worker_gone(
        self, session: AsyncSession, now: float, already: set[str]
    ) -> list[FailedRun]:
        since = now - self.worker_exit_grace_s
        rows = await runs.reported_exits(session, _UNFINISHED, since)
        delivering = await runs.deployments_storing_events_since(
            session, (dep for _, dep, _, _ in rows), since
        )
        failed: list[FailedRun] = []
        for run_id, deployment_id, exited_at, payload in rows:
            if run_id in already:
                continue
            # Validated when stored (or the control plane's own record of a vanished worker).
            code = RunWorkerExited.model_validate(payload).exit_code
            if (
                deployment_id in delivering
                and code in (0, None)
                and now - exited_at < self.worker_exit_backlog_max_s
            ):
                # A worker that exited cleanly (or vanished unseen) sent its terminal event
                # before exiting; while its deployment's events are still being stored it
                # may be queued behind them (an agent catching up after an outage).
                continue
            gone = "exited" if code is None else f"exited (code {code})"
            reason = (
                f"the run worker {gone} {now - exited_at:.0f}s ago and the run "
                "never reported that it finished"
            )
            if await lifecycle.fail(
                session, run_id, "RunWorkerGone", reason, now, RunFailureReason.WORKER_LOST
            ):
                failed.append(FailedRun(run_id, reason))
        return failed

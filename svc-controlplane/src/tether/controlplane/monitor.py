"""The run monitor: runs that will never finish on their own are failed, with the reason.

Two cases, checked every ``run_monitor_interval_s``:

- a run stuck in STARTING longer than ``run_start_timeout_s``: its worker was launched (or
  the launch was claimed) but never reported RUN_START — the worker died before it could,
  or the agent lost it;
- a run whose launcher reported its worker exited (a ``run_worker_exited`` result) but that
  is still unfinished ``worker_exit_grace_s`` later. A non-zero exit already fails the run
  when the report arrives; a clean exit (code 0) waits out the grace period, because the
  worker's terminal event may still be travelling through another relay batch.

Each is marked FAILURE with an ENGINE_ERROR event saying why, then RUN_FAILURE. The check is
one conditional update per run (a run that finished meanwhile is left alone), so running it
in several control plane processes at once is harmless.

A worker can also vanish without anyone reporting its exit (its launcher was killed, the
host rebooted). So every ``health_interval_s`` the monitor asks the launcher about each
launched, unfinished run (a ``check_run_health`` work item, one per run per interval); a
"not running" answer counts as an exit report of unknown code (see
:mod:`tether.controlplane.store.results`), which the second case above then settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Run, WorkItemRow, WorkResultRow
from tether.controlplane.store import runs
from tether.controlplane.workqueue import WorkQueue
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import EventType, RunStatus
from tether.shared.wire.work import ReportKind, RunHealthPayload, RunWorkerExited, WorkKind

log = logging.getLogger(__name__)

#: Statuses the monitor may fail (terminal ones never change; CANCELING is the terminator's).
_UNFINISHED = [str(RunStatus.STARTING), str(RunStatus.STARTED)]
#: Statuses of runs whose worker was launched and may have vanished.
_LAUNCHED = [*_UNFINISHED, str(RunStatus.CANCELING)]


@dataclass(frozen=True)
class FailedRun:
    """A run the monitor failed, and why."""

    run_id: str
    reason: str


class RunMonitor:
    """Fails runs that are stuck in STARTING or whose worker is gone.

    Args:
        db: the metadata DB.
        start_timeout_s: longest a run may stay in STARTING.
        worker_exit_grace_s: how long after a reported worker exit a run may stay unfinished.
        interval_s: how often :meth:`run` checks.
        queue: where health checks are queued (None: no health checks).
        health_interval_s: how often each launched, unfinished run's worker is checked.
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        *,
        start_timeout_s: float,
        worker_exit_grace_s: float,
        interval_s: float,
        queue: WorkQueue | None = None,
        health_interval_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._queue = queue
        self.health_interval_s = health_interval_s
        self.start_timeout_s = start_timeout_s
        self.worker_exit_grace_s = worker_exit_grace_s
        self.interval_s = interval_s
        self._clock = clock
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Check every ``interval_s`` until :meth:`shutdown` (a failed check is only logged)."""
        while not self._stop.is_set():
            try:
                failed = await self.check()
            except Exception:
                # A DB outage must not kill the monitor: the next interval tries again.
                log.exception("run monitor check failed; retrying in %.0fs", self.interval_s)
            else:
                for run in failed:
                    log.warning("failed run %s: %s", run.run_id, run.reason)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._stop.wait()

    def shutdown(self) -> None:
        """Stop :meth:`run` after the check in progress (idempotent)."""
        self._stop.set()

    async def check(self) -> list[FailedRun]:
        """Fail every run that is overdue now; return them."""
        now = self._clock()
        async with self._db.transaction() as session:
            failed = await self._stuck_starting(session, now)
            failed += await self._worker_gone(session, now, {f.run_id for f in failed})
            if self._queue is not None:
                await self._ask_health(session, self._queue, now)
        return failed

    async def _ask_health(self, session: AsyncSession, queue: WorkQueue, now: float) -> None:
        # One item per run per interval, named by the interval: several monitors (or a
        # check repeated within the interval) ask once.
        window = int(now // self.health_interval_s)
        launched = (
            await session.execute(
                select(Run.id, Run.deployment_id, Run.traceparent).where(
                    Run.status.in_(_LAUNCHED),
                    Run.status_changed_at < now - self.health_interval_s,
                )
            )
        ).all()
        for run_id, deployment_id, traceparent in launched:
            item_id = f"health-{run_id}-{window}"
            launch = await session.get(WorkItemRow, runs.launch_item_id(run_id))
            if launch is None or await session.get(WorkItemRow, item_id) is not None:
                continue
            queue.enqueue(
                session,
                deployment_id=deployment_id,
                kind=WorkKind.CHECK_RUN_HEALTH,
                location=LocationConfig.model_validate(launch.location),
                payload=RunHealthPayload(run_id=run_id),
                traceparent=traceparent,
                item_id=item_id,
                # A check nobody answers soon is worthless: the next interval asks again.
                expires_at=now + self.health_interval_s,
            )

    async def _stuck_starting(self, session: AsyncSession, now: float) -> list[FailedRun]:
        deadline = now - self.start_timeout_s
        stuck = (
            await session.execute(
                select(Run.id).where(
                    Run.status == str(RunStatus.STARTING),
                    Run.status_changed_at < deadline,
                )
            )
        ).scalars()
        reason = (
            f"the run stayed in STARTING for more than {self.start_timeout_s:g}s: its run "
            "worker never reported that it started (it may have died at launch, or the "
            "agent lost it)"
        )
        return [
            FailedRun(run_id, reason)
            for run_id in list(stuck)
            if await self._fail(session, run_id, "RunStartTimeout", reason, now)
        ]

    async def _worker_gone(
        self, session: AsyncSession, now: float, already: set[str]
    ) -> list[FailedRun]:
        # The worker exit report is a result about the run's launch_run work item, whose
        # payload names the run (a JSON path query both SQLite and PostgreSQL support).
        run_id_of_item = WorkItemRow.payload["run_id"].as_string()
        rows = (
            await session.execute(
                select(Run.id, WorkResultRow.created_at, WorkResultRow.payload)
                .join(WorkItemRow, WorkItemRow.id == WorkResultRow.work_item_id)
                .join(Run, Run.id == run_id_of_item)
                .where(
                    WorkResultRow.kind == str(ReportKind.RUN_WORKER_EXITED),
                    WorkResultRow.created_at < now - self.worker_exit_grace_s,
                    Run.status.in_(_UNFINISHED),
                )
            )
        ).all()
        failed: list[FailedRun] = []
        for run_id, exited_at, payload in rows:
            if run_id in already:
                continue
            # Validated when stored (or the control plane's own record of a vanished worker).
            code = RunWorkerExited.model_validate(payload).exit_code
            gone = "exited" if code is None else f"exited (code {code})"
            reason = (
                f"the run worker {gone} {now - exited_at:.0f}s ago and the run "
                "never reported that it finished"
            )
            if await self._fail(session, run_id, "RunWorkerGone", reason, now):
                failed.append(FailedRun(run_id, reason))
        return failed

    async def _fail(
        self, session: AsyncSession, run_id: str, cls_name: str, reason: str, now: float
    ) -> bool:
        # Status first, conditionally: only the process that moved the run writes its events.
        if not await runs.advance_status(session, run_id, RunStatus.FAILURE, now):
            return False
        error = ErrorInfo(cls_name=cls_name, message=reason)
        runs.add_control_event(
            session, run_id, EventType.ENGINE_ERROR, message=reason, timestamp=now, error=error
        )
        runs.add_control_event(
            session, run_id, EventType.RUN_FAILURE, message="run failed: " + reason, timestamp=now
        )
        return True

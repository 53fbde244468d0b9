"""Terminating a run: cancel it before it launches, or ask its launcher to interrupt it.

A run that has not been handed to an agent yet (its ``launch_run`` item still PENDING) is
canceled on the spot. Otherwise it goes CANCELING and a ``terminate_run`` work item asks
the launcher to interrupt the worker (SIGTERM, then SIGKILL after a grace period); the
worker reports RUN_CANCELED itself. What comes back later settles the rest
(:mod:`tether.controlplane.runs.lifecycle`): a launch that lands after the terminate is
interrupted again, and a worker that was not running any more ends the run CANCELED.

Canceling a backfill (:func:`cancel_backfill`) terminates its runs the same way, one by one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Backfill, BackfillStatus, Run
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs import lifecycle
from tether.controlplane.store import backfills, deployment_settings, runs, workitems
from tether.shared.wire.runs import RunStatus
from tether.shared.wire.work import WorkKind

log = logging.getLogger(__name__)

#: Statuses of a backfill's runs that a cancel with ``terminate_running`` interrupts.
_RUNNING = [RunStatus.STARTING, RunStatus.STARTED]


@dataclass(frozen=True)
class Terminating:
    """The run was canceled, or its launcher was asked to interrupt it."""

    run: Run


@dataclass(frozen=True)
class RunNotFound:
    """No such run in this deployment."""

    message: str


@dataclass(frozen=True)
class RunAlreadyFinished:
    """The run already ended; there is nothing to terminate."""

    message: str


TerminateOutcome = Terminating | RunNotFound | RunAlreadyFinished


async def terminate_run(
    db: Database, queue: WorkQueue, *, deployment_id: str, run_id: str
) -> TerminateOutcome:
    """Cancel ``run_id`` or queue its interruption, in one transaction."""
    async with db.transaction() as session:
        run = await runs.get_run(session, deployment_id, run_id)
        if run is None:
            return RunNotFound(f"no run {run_id!r} in this deployment")
        status = RunStatus(run.status)
        if status.is_terminal:
            return RunAlreadyFinished(f"run {run_id} already ended ({status})")
        now = time.time()
        held = await deployment_settings.holds_launches(
            session, deployment_id, default=queue.hold_launches
        )
        if status == RunStatus.QUEUED and await _withdraw_launch(session, run, held=held):
            await lifecycle.cancel_unlaunched(session, run_id, now)
        else:
            await lifecycle.request_termination(session, queue, run, status, now)
    async with db.reading() as session:
        refreshed = await runs.get_run(session, deployment_id, run_id)
    assert refreshed is not None
    return Terminating(refreshed)


async def _withdraw_launch(session: AsyncSession, run: Run, *, held: bool) -> bool:
    """Take back a launch no agent has claimed yet; False when one already has it."""
    run_id = run.id
    launch = await lifecycle.launch_item(session, run_id)
    if launch is None and not held:
        return False
    if launch is None:
        # Held by the run queue (no launch queued yet): take the launch item's id first,
        # as an already-finished item, so the run coordinator's insert of it fails and
        # the run is never dispatched.
        return await workitems.reserve_finished(
            session,
            item_id=runs.launch_item_id(run_id),
            deployment_id=run.deployment_id,
            kind=WorkKind.LAUNCH_RUN,
            location_name=run.location_name,
            payload={"run_id": run_id},
        )
    return await workitems.withdraw_pending(session, launch.id)


async def cancel_backfill(
    db: Database,
    queue: WorkQueue,
    *,
    deployment_id: str,
    backfill_id: str,
    terminate_running: bool,
    now: float,
) -> tuple[Backfill, list[str]]:
    """Stop launching the backfill's partitions and cancel its queued runs.

    With ``terminate_running`` its started runs are terminated too (their launcher
    interrupts them); without, they run to their end. Canceling a CANCELED backfill again
    is allowed (e.g. to terminate what still runs). Each run goes through
    :func:`terminate_run`, in a transaction of its own.

    Returns:
        The backfill and the runs asked to stop.

    Raises:
        NotFoundError: no such backfill.
        BadInputError: it already ended and none of its runs is unfinished.
    """
    async with db.transaction() as session:
        backfill = await backfills.get_backfill(session, deployment_id, backfill_id)
        if backfill is None:
            raise NotFoundError(f"no backfill {backfill_id!r}")
        if backfill.status in (
            BackfillStatus.COMPLETED,
            BackfillStatus.FAILED,
        ) and not await backfills.has_unfinished_runs(session, backfill.id):
            raise BadInputError(
                f"backfill {backfill_id} already ended ({backfill.status}) and none of "
                "its runs is unfinished; nothing to cancel"
            )
        await backfills.mark_canceled(session, backfill.id, now)
    # Committed: from here on the daemon creates no run of this backfill, so the runs
    # read now are all there will ever be.
    statuses = [RunStatus.QUEUED] + (_RUNNING if terminate_running else [])
    async with db.reading() as session:
        run_ids = await backfills.run_ids_in(session, backfill_id, statuses)
    stopped = []
    for run_id in run_ids:
        outcome = await terminate_run(db, queue, deployment_id=deployment_id, run_id=run_id)
        # A run that ended meanwhile needs nothing.
        if isinstance(outcome, Terminating):
            stopped.append(run_id)
    async with db.reading() as session:
        refreshed = await backfills.get_backfill(session, deployment_id, backfill_id)
    assert refreshed is not None
    log.info("backfill %s canceled; %d run(s) asked to stop", backfill_id, len(stopped))
    return refreshed, stopped

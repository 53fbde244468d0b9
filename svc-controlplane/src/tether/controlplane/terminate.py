"""Terminating a run: cancel it before it launches, or ask its launcher to interrupt it.

A run that has not been handed to an agent yet (its ``launch_run`` item still PENDING) is
canceled on the spot. Otherwise it goes CANCELING and a ``terminate_run`` work item asks
the launcher to interrupt the worker (SIGTERM, then SIGKILL after a grace period); the
worker reports RUN_CANCELED itself. What comes back later settles the rest
(:mod:`tether.controlplane.store.results`): a launch that lands after the terminate is
interrupted again, and a worker that was not running any more ends the run CANCELED.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Run, WorkItemRow, WorkStatus
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.store import runs
from tether.controlplane.workqueue import WorkQueue
from tether.shared.runtime import telemetry
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import EventType, RunStatus
from tether.shared.wire.work import TerminateRunPayload, WorkKind


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
        if status == RunStatus.QUEUED and await _withdraw_launch(
            session, run, held=queue.hold_launches
        ):
            runs.add_control_event(
                session,
                run_id,
                EventType.RUN_CANCELED,
                message="run canceled before it was launched",
                timestamp=now,
            )
            await runs.advance_status(session, run_id, RunStatus.CANCELED, now)
        else:
            if status != RunStatus.CANCELING:
                runs.add_control_event(
                    session,
                    run_id,
                    EventType.RUN_CANCELING,
                    message="termination requested",
                    timestamp=now,
                )
                await runs.advance_status(session, run_id, RunStatus.CANCELING, now)
            await request_interrupt(session, queue, run)
    async with db.reading() as session:
        refreshed = await runs.get_run(session, deployment_id, run_id)
    assert refreshed is not None
    return Terminating(refreshed)


async def request_interrupt(session: AsyncSession, queue: WorkQueue, run: Run) -> None:
    """Queue a ``terminate_run`` item for the launcher of ``run``'s location."""
    launch = await _launch_item(session, run.id)
    location = (
        LocationConfig.model_validate(launch.location)
        if launch is not None
        else LocationConfig(name=run.location_name)
    )
    queue.enqueue(
        session,
        deployment_id=run.deployment_id,
        kind=WorkKind.TERMINATE_RUN,
        location=location,
        payload=TerminateRunPayload(run_id=run.id),
        traceparent=telemetry.current_traceparent() or run.traceparent,
    )


async def launch_settled(session: AsyncSession, run_id: str) -> bool:
    """Whether the run's ``launch_run`` item got its result (so no launch is still coming)."""
    launch = await _launch_item(session, run_id)
    return launch is None or launch.status in (WorkStatus.DONE, WorkStatus.FAILED)


async def _launch_item(session: AsyncSession, run_id: str) -> WorkItemRow | None:
    return await session.get(WorkItemRow, runs.launch_item_id(run_id))


async def _withdraw_launch(session: AsyncSession, run: Run, *, held: bool) -> bool:
    """Take back a launch no agent has claimed yet; False when one already has it."""
    run_id = run.id
    launch = await _launch_item(session, run_id)
    if launch is None and not held:
        return False
    if launch is None:
        # Held by the run queue (no launch queued yet): take the launch item's id first,
        # as an already-finished item, so the run coordinator's insert of it fails and
        # the run is never dispatched.
        withdrawn_now = (
            await session.execute(
                upsert_insert(session, WorkItemRow.__table__)
                .values(
                    id=runs.launch_item_id(run_id),
                    deployment_id=run.deployment_id,
                    kind=str(WorkKind.LAUNCH_RUN),
                    location_name=run.location_name,
                    substrate="",
                    location=LocationConfig(name=run.location_name).model_dump(mode="json"),
                    payload={"run_id": run_id},
                    status=WorkStatus.FAILED,
                    attempts=0,
                    created_at=time.time(),
                )
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(WorkItemRow.__table__.c.id)
            )
        ).first()
        return withdrawn_now is not None
    withdrawn = await session.execute(
        update(WorkItemRow)
        .where(WorkItemRow.id == launch.id, WorkItemRow.status == WorkStatus.PENDING)
        .values(status=WorkStatus.FAILED)
        .execution_options(synchronize_session=False)
    )
    return withdrawn.rowcount == 1

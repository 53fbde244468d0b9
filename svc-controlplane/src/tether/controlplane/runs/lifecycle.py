"""The run state machine: every status move of a run, with the control events it writes.

A run is QUEUED when created, STARTING once its launcher reports the worker launched,
STARTED / SUCCESS / FAILURE as its worker's events say, CANCELING when termination was
asked and CANCELED when that is done (or at once, when no agent had its launch yet).
Statuses only move up (:data:`tether.controlplane.store.runs.STATUS_RANK`, one conditional
UPDATE each), so concurrent uploads, monitors and replicas cannot move a run backwards.

This module is the only caller of the store's status writes (a test checks it); whoever
changes a run's status calls one of these functions with its own session, so the move is
part of the caller's transaction:

- creation: :func:`enqueue` (launch, re-execution, schedule and sensor ticks, backfills);
- the worker's own events: :func:`store_events` (agent uploads);
- the launch's result: :func:`apply_launch` (STARTING, or FAILURE before it started);
- termination: :func:`cancel_unlaunched`, :func:`request_termination`, and what comes
  back later, :func:`apply_terminate`, :func:`apply_health`, :func:`apply_worker_exit`;
- the run monitor: :func:`fail`.

Every move to FAILURE names its :class:`~tether.controlplane.runs.failures.RunFailureReason`
(stored on the run, and in the data of the RUN_FAILURE event the control plane writes), and
leaves the run's retry pending for the run retrier (:mod:`tether.controlplane.runs.retries`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import Run, WorkItemRow, WorkStatus
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs.failures import RunFailureReason
from tether.controlplane.store import locations, retries, runs, workitems
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import STATUS_FOR_EVENT, EventType, RunEvent, RunStatus
from tether.shared.wire.work import (
    ReportKind,
    RunHealth,
    RunLaunched,
    RunTerminated,
    RunWorkerExited,
    TerminateRunPayload,
    WorkKind,
    WorkResult,
)
from tether.shared.wire.workspecs import REPORT_SPECS

log = logging.getLogger(__name__)


def enqueue(
    session: AsyncSession,
    *,
    run_id: str,
    deployment_id: str,
    location_name: str,
    repository_name: str | None,
    job_name: str,
    run_config: dict[str, Any],
    tags: dict[str, str],
    traceparent: str | None,
    now: float,
) -> Run:
    """Create a QUEUED run and its RUN_ENQUEUED event in ``session``'s transaction."""
    run = runs.create_run(
        session,
        run_id=run_id,
        deployment_id=deployment_id,
        location_name=location_name,
        repository_name=repository_name,
        job_name=job_name,
        run_config=run_config,
        tags=tags,
        traceparent=traceparent,
        created_at=now,
    )
    runs.add_control_event(
        session, run_id, EventType.RUN_ENQUEUED, message="run queued", timestamp=now
    )
    return run


async def store_events(
    session: AsyncSession, deployment_id: str, events: Sequence[RunEvent]
) -> tuple[int, int]:
    """Store worker events idempotently on ``(run_id, seq)`` and advance run statuses.

    Returns:
        (stored, duplicates).

    Raises:
        BadInputError: an event names a run that is not in ``deployment_id``.
    """
    stored, duplicates = await runs.store_events(session, deployment_id, events)
    # Applying every event, not only the new ones, is harmless: statuses only move up.
    for ev in sorted(events, key=lambda e: (e.run_id, e.seq)):
        status = STATUS_FOR_EVENT.get(ev.event_type)
        if status is None:
            continue
        reason = None
        if status == RunStatus.FAILURE:
            reason = await worker_failure_reason(session, ev.run_id)
        await runs.advance_status(session, ev.run_id, status, ev.timestamp, failure_reason=reason)
    return stored, duplicates


async def worker_failure_reason(session: AsyncSession, run_id: str) -> RunFailureReason:
    """Why a run failed, when its own worker reported the failure: a step failed, or the
    run failed outside any step (this upload's events are stored already, so they count)."""
    if await retries.has_step_failure(session, run_id):
        return RunFailureReason.STEP_FAILURE
    return RunFailureReason.RUN_EXCEPTION


async def _end(
    session: AsyncSession,
    run_id: str,
    status: RunStatus,
    events: Sequence[tuple[EventType, str, ErrorInfo | None, dict[str, Any] | None]],
    at: float,
    failure_reason: RunFailureReason | None = None,
) -> None:
    """Add the control ``events`` (type, message, error, data) stamped ``at``, then move
    the run to ``status`` (in the caller's transaction: both commit or neither does)."""
    for event_type, message, error, data in events:
        runs.add_control_event(
            session, run_id, event_type, message=message, timestamp=at, error=error, data=data
        )
    await runs.advance_status(session, run_id, status, at, failure_reason=failure_reason)


async def _canceled(
    session: AsyncSession, run_id: str, message: str, at: float, data: dict[str, Any] | None
) -> None:
    await _end(
        session, run_id, RunStatus.CANCELED, [(EventType.RUN_CANCELED, message, None, data)], at
    )


async def fail(
    session: AsyncSession,
    run_id: str,
    cls_name: str,
    reason: str,
    now: float,
    failure_reason: RunFailureReason,
) -> bool:
    """Fail an unfinished run the run monitor gave up on; False if it moved meanwhile.

    Status first, conditionally: only the process that moved the run writes its events.
    """
    if not await runs.advance_status(
        session, run_id, RunStatus.FAILURE, now, failure_reason=failure_reason
    ):
        return False
    error = ErrorInfo(cls_name=cls_name, message=reason)
    runs.add_control_event(
        session, run_id, EventType.ENGINE_ERROR, message=reason, timestamp=now, error=error
    )
    runs.add_control_event(
        session,
        run_id,
        EventType.RUN_FAILURE,
        message="run failed: " + reason,
        timestamp=now,
        data=failure_reason.event_data(),
    )
    return True


# -- termination ----------------------------------------------------------------------


async def cancel_unlaunched(session: AsyncSession, run_id: str, now: float) -> None:
    """A QUEUED run whose launch was withdrawn before any agent had it: CANCELED at once."""
    await _canceled(session, run_id, "run canceled before it was launched", now, None)


async def request_termination(
    session: AsyncSession, queue: WorkQueue, run: Run, status: RunStatus, now: float
) -> None:
    """Move ``run`` (currently ``status``) to CANCELING and ask its launcher to interrupt
    its worker (again, when it was CANCELING already)."""
    if status != RunStatus.CANCELING:
        runs.add_control_event(
            session, run.id, EventType.RUN_CANCELING, message="termination requested", timestamp=now
        )
        await runs.advance_status(session, run.id, RunStatus.CANCELING, now)
    await request_interrupt(session, queue, run)


async def request_interrupt(
    session: AsyncSession, queue: WorkQueue, run: Run, *, item_id: str | None = None
) -> None:
    """Queue a ``terminate_run`` item for the launcher of ``run``'s location, naming the
    launcher domain that owns the run (only a launcher of it acts on the item).

    ``item_id`` names the item (None: a random id)."""
    launch = await launch_item(session, run.id)
    if launch is not None:
        location = LocationConfig.model_validate(launch.location)
    else:
        # No launch queued (yet): the location's own config, for its queue and substrate.
        row = await locations.get_location(session, run.deployment_id, run.location_name)
        location = (
            LocationConfig.model_validate(row.config)
            if row is not None
            else LocationConfig(name=run.location_name)
        )
    queue.enqueue(
        session,
        deployment_id=run.deployment_id,
        kind=WorkKind.TERMINATE_RUN,
        # The launch's location: the same agent queue and substrate as the launch.
        location=location,
        payload=TerminateRunPayload(run_id=run.id, owner=await run_owner(session, run.id)),
        traceparent=telemetry.current_traceparent() or run.traceparent,
        item_id=item_id,
    )


async def launch_item(session: AsyncSession, run_id: str) -> WorkItemRow | None:
    """The run's ``launch_run`` work item, if one was queued."""
    return await workitems.get_item(session, runs.launch_item_id(run_id))


async def run_owner(session: AsyncSession, run_id: str) -> str | None:
    """The launcher domain that launched ``run_id`` (its launch result's ``owner``); None
    while no launch result is in, or when an older launcher sent none."""
    result = await workitems.get_result(session, runs.launch_item_id(run_id))
    if result is None or not result.ok:
        return None
    owner = result.payload.get("owner")
    return owner if isinstance(owner, str) and owner else None


async def launch_settled(session: AsyncSession, run_id: str) -> bool:
    """Whether the run's ``launch_run`` item got its result (so no launch is still coming)."""
    launch = await launch_item(session, run_id)
    return launch is None or launch.status in (WorkStatus.DONE, WorkStatus.FAILED)


# -- what agents report ---------------------------------------------------------------


async def apply_launch(
    session: AsyncSession,
    queue: WorkQueue | None,
    deployment_id: str,
    item: WorkItemRow,
    result: WorkResult,
    launched: RunLaunched | None,
) -> None:
    """A launcher's answer to ``launch_run`` (``launched`` when it succeeded): STARTING,
    or FAILURE before it started."""
    run_id = str(item.payload.get("run_id") or (launched and launched.run_id) or "")
    status = await runs.run_status(session, run_id)
    if status is None:
        return
    if launched is not None:
        # Recorded even if the worker's own events got here first: stamped with the time the
        # launcher reported, it still sorts before the worker's RUN_START.
        runs.add_control_event(
            session,
            run_id,
            EventType.RUN_STARTING,
            message="run worker launched",
            timestamp=result.created_at,
            # What the launcher said about the worker (pid, warm), as it said it.
            data=launched.model_dump(mode="json", exclude={"run_id"}, exclude_unset=True),
        )
        await runs.advance_status(session, run_id, RunStatus.STARTING, result.created_at)
        if queue is not None:
            await _interrupt_if_canceling(session, queue, deployment_id, run_id)
        return
    if status.is_terminal:
        return
    error = result.error or ErrorInfo(cls_name="UnknownError", message="launch failed")
    reason = RunFailureReason.LAUNCH_FAILED
    await _end(
        session,
        run_id,
        RunStatus.FAILURE,
        [
            (EventType.ENGINE_ERROR, f"could not launch the run: {error.message}", error, None),
            (EventType.RUN_FAILURE, "the run failed before it started", None, reason.event_data()),
        ],
        result.created_at,
        reason,
    )


async def _interrupt_if_canceling(
    session: AsyncSession, queue: WorkQueue, deployment_id: str, run_id: str
) -> None:
    # Termination was requested while the launch was on its way: the terminate_run item may
    # have reached the launcher first and found nothing to stop, so ask again now.
    if await runs.run_status(session, run_id) == RunStatus.CANCELING:
        run = await runs.get_run(session, deployment_id, run_id)
        if run is not None:
            await request_interrupt(session, queue, run)


#: How many times a ``terminate_run`` answered "unknown, not mine" is asked again (the
#: owner's launchers did not take it from the shared consumer in all its deliveries).
TERMINATE_REASKS = 3
_REASK_SUFFIX = ".again"


async def apply_terminate(
    session: AsyncSession,
    queue: WorkQueue | None,
    deployment_id: str,
    result: WorkResult,
    terminated: RunTerminated | None,
) -> None:
    """A launcher's answer to ``terminate_run`` (``terminated`` when it succeeded):
    CANCELED when nothing was running; asked again when a launcher of another domain
    answered (it cannot tell, so the run is never taken for stopped)."""
    if terminated is not None and terminated.signalled is None:
        await _reask_terminate(session, queue, deployment_id, result, terminated)
        return
    if terminated is None or terminated.signalled:
        return  # the worker reports RUN_CANCELED itself (or its exit does)
    run_id = terminated.run_id
    # Nothing was running: once no launch is still on its way, the run is over.
    if await runs.run_status(session, run_id) == RunStatus.CANCELING and (
        await launch_settled(session, run_id)
    ):
        message = "run canceled: its worker was no longer running"
        await _canceled(session, run_id, message, result.created_at, None)


async def _reask_terminate(
    session: AsyncSession,
    queue: WorkQueue | None,
    deployment_id: str,
    result: WorkResult,
    terminated: RunTerminated,
) -> None:
    log.info(
        "terminate_run %s of run %s answered by a launcher outside its domain %s",
        result.work_item_id,
        terminated.run_id,
        terminated.owner or "(unknown)",
    )
    if queue is None or result.work_item_id.count(_REASK_SUFFIX) >= TERMINATE_REASKS:
        return  # the run monitor's health checks ask again while the worker runs
    if await runs.run_status(session, terminated.run_id) != RunStatus.CANCELING:
        return
    run = await runs.get_run(session, deployment_id, terminated.run_id)
    item_id = result.work_item_id + _REASK_SUFFIX
    if run is not None and await workitems.get_item(session, item_id) is None:
        await request_interrupt(session, queue, run, item_id=item_id)


async def apply_health(
    session: AsyncSession,
    queue: WorkQueue | None,
    deployment_id: str,
    health: RunHealth,
    result: WorkResult,
) -> None:
    """A launcher's answer to ``check_run_health``; "unknown" (a launcher of another
    domain answered) changes nothing: the next check asks again."""
    if health.alive is None:
        log.info(
            "health check %s of run %s answered by a launcher outside its domain %s",
            result.work_item_id,
            health.run_id,
            health.owner or "(unknown)",
        )
        return
    status = await runs.run_status(session, health.run_id)
    if status is None or status.is_terminal:
        return
    if health.alive:
        if status == RunStatus.CANCELING and queue is not None:
            # Still running although termination was asked: ask again (the launcher
            # SIGKILLs after its grace period), in case the first request was lost.
            run = await runs.get_run(session, deployment_id, health.run_id)
            if run is not None:
                await request_interrupt(session, queue, run)
        return
    if status == RunStatus.CANCELING:
        message = "run canceled: its worker was no longer running"
        await _canceled(session, health.run_id, message, result.created_at, None)
        return
    # Gone without an exit report: record it as an exit of unknown code about the launch,
    # and let the run monitor fail the run if its terminal event does not arrive within
    # the grace period (a worker that finished cleanly may still have events in flight).
    report = REPORT_SPECS[ReportKind.RUN_WORKER_EXITED]
    await workitems.insert_result(
        session,
        WorkResult(
            id=f"{result.id}.gone",
            work_item_id=runs.launch_item_id(health.run_id),
            kind=report.kind,
            ok=False,
            payload=report.result_json(RunWorkerExited(run_id=health.run_id, exit_code=None)),
            created_at=result.created_at,
        ),
    )


async def apply_worker_exit(
    session: AsyncSession, run_id: str, exit_code: int | None, result: WorkResult
) -> None:
    """A launcher's report that the run's worker process exited with ``exit_code`` (None:
    it vanished, its code unknown)."""
    # Exit code 0 means the worker published (and JetStream stored) all its events, the
    # terminal one last; that event may still be on its way through another relay batch,
    # so a clean exit never fails the run here.
    if exit_code == 0:
        return
    status = await runs.run_status(session, run_id)
    if status is None or status.is_terminal:
        return
    data = {"exit_code": exit_code}
    if status == RunStatus.CANCELING:
        # Killed after the grace period (or died) while being terminated: that is the
        # cancellation the user asked for, not a failure.
        message = f"run canceled: its worker stopped with exit code {exit_code}"
        await _canceled(session, run_id, message, result.created_at, data)
        return
    message = f"run worker exited with code {exit_code} before the run finished"
    reason = RunFailureReason.WORKER_EXITED
    await _end(
        session,
        run_id,
        RunStatus.FAILURE,
        [
            (EventType.ENGINE_ERROR, message, result.error, data),
            (EventType.RUN_FAILURE, "run failed: " + message, None, reason.event_data()),
        ],
        result.created_at,
        reason,
    )

"""Work results: stored once by their natural key, and what each one changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane import terminate
from tether.controlplane.db.models import WorkItemRow, WorkResultRow, WorkStatus
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.errors import BadInputError, describe_validation_error
from tether.controlplane.store import locations, runs
from tether.controlplane.store.uploads import Refusal
from tether.controlplane.workqueue import WorkQueue
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.errors import ContractError
from tether.shared.wire.runs import EventType, RunStatus
from tether.shared.wire.snapshots import LocationSnapshot, snapshot_from_payload
from tether.shared.wire.work import RUN_WORKER_EXITED, RunHealth, WorkKind, WorkResult


class _WorkerExit(BaseModel):
    """Payload of a ``run_worker_exited`` report."""

    run_id: str
    exit_code: int


@dataclass(frozen=True)
class _Parsed:
    result: WorkResult
    item: WorkItemRow
    snapshot: LocationSnapshot | None = None
    worker_exit: _WorkerExit | None = None
    health: RunHealth | None = None


#: Follow-up reports about a work item (id ``<item id>.<suffix>``): report kind -> the
#: kinds of work item it may be about.
REPORT_KINDS: dict[str, frozenset[str]] = {
    RUN_WORKER_EXITED: frozenset({WorkKind.LAUNCH_RUN}),
}


async def submit_results(
    session: AsyncSession,
    deployment_id: str,
    results: Sequence[tuple[int, WorkResult]],
    *,
    queue: WorkQueue | None = None,
    snapshot_max_bytes: int | None = None,
    max_snapshots: int | None = None,
) -> tuple[int, int, list[Refusal]]:
    """Store results idempotently on their id and apply the effects of the new ones.

    ``results`` are (index in the upload, result). Each is checked on its own before
    anything is written: it must answer a work item of ``deployment_id`` (its id is that
    item's id, of the item's kind; or ``<item id>.<suffix>`` for a follow-up report such as
    a worker exit), and its payload must be well formed. A result failing a check is
    refused with the reason and the others are stored. ``queue`` takes the follow-up work
    some results call for (interrupting a run whose launch landed after its termination
    was requested).

    Returns:
        (stored, duplicates, refused).

    Raises:
        BadInputError: more than ``max_snapshots`` snapshots in one request.
    """
    parsed, refused = await _parse(
        session, deployment_id, results, snapshot_max_bytes, max_snapshots
    )
    stored = 0
    kinds: set[str] = set()
    for entry in parsed:
        if await _insert(session, entry.result):
            stored += 1
            kinds.add(entry.result.kind)
            await _apply(session, deployment_id, entry, queue)
    if queue is not None and kinds:
        queue.results_stored(session, kinds)
    return stored, len(parsed) - stored, refused


def binding_problem(result: WorkResult, item: WorkItemRow | None) -> str | None:
    """Why ``result`` cannot be the answer (or a report) of work item ``item``; None if
    it can. A result's id is never the client's to choose: it is its item's id."""
    if item is None:
        return f"work_item_id {result.work_item_id!r} names no work item of this deployment"
    if result.id == item.id:
        if result.kind != item.kind:
            return f"kind {result.kind!r} does not match its work item's kind {item.kind!r}"
    elif result.id.startswith(f"{item.id}.") and len(result.id) > len(item.id) + 1:
        if item.kind not in REPORT_KINDS.get(result.kind, frozenset()):
            return (
                f"a report {result.id!r} about a {item.kind} work item cannot be of kind "
                f"{result.kind!r}"
            )
    else:
        return (
            f"id {result.id!r} must be its work item's id {item.id!r}, or "
            f"'{item.id}.<suffix>' for a report about it"
        )
    item_run = (item.payload or {}).get("run_id")
    result_run = result.payload.get("run_id")
    if item_run is not None and result_run is not None and result_run != item_run:
        return f"payload run_id {result_run!r} is not its work item's run {item_run!r}"
    return None


async def _parse(
    session: AsyncSession,
    deployment_id: str,
    results: Sequence[tuple[int, WorkResult]],
    snapshot_max_bytes: int | None,
    max_snapshots: int | None,
) -> tuple[list[_Parsed], list[Refusal]]:
    snapshots = sum(1 for _, r in results if r.kind == WorkKind.LOAD_LOCATION and r.ok)
    if max_snapshots is not None and snapshots > max_snapshots:
        raise BadInputError(
            f"{snapshots} location snapshots in one request, over the limit of {max_snapshots} "
            "(TETHER_CONTROLPLANE_SNAPSHOTS_PER_REQUEST); nothing was stored: send them in "
            "smaller batches"
        )
    ids = {r.work_item_id for _, r in results}
    items = {
        row.id: row
        for row in (
            await session.execute(
                select(WorkItemRow).where(
                    WorkItemRow.deployment_id == deployment_id, WorkItemRow.id.in_(ids)
                )
            )
        ).scalars()
    }
    parsed: list[_Parsed] = []
    refused: list[Refusal] = []
    for index, result in results:
        item = items.get(result.work_item_id)
        problem = binding_problem(result, item)
        if problem is not None or item is None:
            refused.append(Refusal(index, problem or "no work item", result.id))
            continue
        try:
            parsed.append(_parse_payload(result, item, snapshot_max_bytes))
        except ValidationError as err:
            reason = f"malformed payload: {describe_validation_error(err)}"
            refused.append(Refusal(index, reason, result.id))
        except ContractError as err:
            refused.append(Refusal(index, f"a successful load_location result: {err}", result.id))
    return parsed, refused


def _parse_payload(
    result: WorkResult, item: WorkItemRow, snapshot_max_bytes: int | None
) -> _Parsed:
    if result.kind == WorkKind.LOAD_LOCATION and result.ok:
        # Plain, or zlib-compressed when large (see tether.shared.wire.snapshots).
        snapshot = snapshot_from_payload(
            result.payload,
            max_bytes=snapshot_max_bytes,
            limit_name="TETHER_CONTROLPLANE_SNAPSHOT_MAX_BYTES",
        )
        return _Parsed(result, item, snapshot=snapshot)
    if result.kind == WorkKind.CHECK_RUN_HEALTH and result.ok:
        return _Parsed(result, item, health=RunHealth.model_validate(result.payload))
    if result.kind == RUN_WORKER_EXITED:
        return _Parsed(result, item, worker_exit=_WorkerExit.model_validate(result.payload))
    return _Parsed(result, item)


async def _insert(session: AsyncSession, result: WorkResult) -> bool:
    stmt = (
        upsert_insert(session, WorkResultRow.__table__)
        .values(
            id=result.id,
            work_item_id=result.work_item_id,
            kind=result.kind,
            ok=result.ok,
            payload=result.payload,
            error=result.error.model_dump(mode="json") if result.error else None,
            created_at=result.created_at,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(WorkResultRow.__table__.c.id)
    )
    return (await session.execute(stmt)).first() is not None


async def _apply(
    session: AsyncSession, deployment_id: str, entry: _Parsed, queue: WorkQueue | None
) -> None:
    result, item = entry.result, entry.item
    if result.kind == item.kind:
        # The main result of the item (not a later report about it): the item is finished.
        await session.execute(
            update(WorkItemRow)
            .where(WorkItemRow.id == item.id)
            .values(
                status=WorkStatus.DONE if result.ok else WorkStatus.FAILED, lease_expires_at=None
            )
            .execution_options(synchronize_session=False)
        )
    if result.kind == WorkKind.LOAD_LOCATION:
        if entry.snapshot is not None:
            await locations.mark_loaded(session, deployment_id, item.location_name, entry.snapshot)
        else:
            await locations.mark_load_error(
                session, deployment_id, item.location_name, result.error
            )
    elif result.kind == WorkKind.LAUNCH_RUN:
        await _apply_launch(session, item, result)
        if result.ok and queue is not None:
            await _interrupt_if_canceling(session, queue, deployment_id, item, result)
    elif result.kind == WorkKind.TERMINATE_RUN:
        await _apply_terminate(session, result)
    elif entry.health is not None:
        await _apply_health(session, queue, deployment_id, entry.health, result)
    elif entry.worker_exit is not None:
        await _apply_worker_exit(session, entry.worker_exit, result)


async def _apply_launch(session: AsyncSession, item: WorkItemRow, result: WorkResult) -> None:
    run_id = str(item.payload.get("run_id") or result.payload.get("run_id") or "")
    status = await runs.run_status(session, run_id)
    if status is None:
        return
    if result.ok:
        # Recorded even if the worker's own events got here first: stamped with the time the
        # launcher reported, it still sorts before the worker's RUN_START.
        runs.add_control_event(
            session,
            run_id,
            EventType.RUN_STARTING,
            message="run worker launched",
            timestamp=result.created_at,
            data={k: v for k, v in result.payload.items() if k != "run_id"},
        )
        await runs.advance_status(session, run_id, RunStatus.STARTING, result.created_at)
        return
    if status.is_terminal:
        return
    error = result.error or ErrorInfo(cls_name="UnknownError", message="launch failed")
    runs.add_control_event(
        session,
        run_id,
        EventType.ENGINE_ERROR,
        message=f"could not launch the run: {error.message}",
        timestamp=result.created_at,
        error=error,
    )
    runs.add_control_event(
        session,
        run_id,
        EventType.RUN_FAILURE,
        message="the run failed before it started",
        timestamp=result.created_at,
    )
    await runs.advance_status(session, run_id, RunStatus.FAILURE, result.created_at)


async def _interrupt_if_canceling(
    session: AsyncSession,
    queue: WorkQueue,
    deployment_id: str,
    item: WorkItemRow,
    result: WorkResult,
) -> None:
    # Termination was requested while the launch was on its way: the terminate_run item may
    # have reached the launcher first and found nothing to stop, so ask again now.
    run_id = str(item.payload.get("run_id") or result.payload.get("run_id") or "")
    if await runs.run_status(session, run_id) == RunStatus.CANCELING:
        run = await runs.get_run(session, deployment_id, run_id)
        if run is not None:
            await terminate.request_interrupt(session, queue, run)


async def _apply_terminate(session: AsyncSession, result: WorkResult) -> None:
    run_id = str(result.payload.get("run_id") or "")
    if not result.ok or result.payload.get("signalled"):
        return  # the worker reports RUN_CANCELED itself (or its exit does)
    # Nothing was running: once no launch is still on its way, the run is over.
    if await runs.run_status(session, run_id) == RunStatus.CANCELING and (
        await terminate.launch_settled(session, run_id)
    ):
        runs.add_control_event(
            session,
            run_id,
            EventType.RUN_CANCELED,
            message="run canceled: its worker was no longer running",
            timestamp=result.created_at,
        )
        await runs.advance_status(session, run_id, RunStatus.CANCELED, result.created_at)


async def _apply_health(
    session: AsyncSession,
    queue: WorkQueue | None,
    deployment_id: str,
    health: RunHealth,
    result: WorkResult,
) -> None:
    status = await runs.run_status(session, health.run_id)
    if status is None or status.is_terminal:
        return
    if health.alive:
        if status == RunStatus.CANCELING and queue is not None:
            # Still running although termination was asked: ask again (the launcher
            # SIGKILLs after its grace period), in case the first request was lost.
            run = await runs.get_run(session, deployment_id, health.run_id)
            if run is not None:
                await terminate.request_interrupt(session, queue, run)
        return
    if status == RunStatus.CANCELING:
        runs.add_control_event(
            session,
            health.run_id,
            EventType.RUN_CANCELED,
            message="run canceled: its worker was no longer running",
            timestamp=result.created_at,
        )
        await runs.advance_status(session, health.run_id, RunStatus.CANCELED, result.created_at)
        return
    # Gone without an exit report: record it as an exit of unknown code about the launch,
    # and let the run monitor fail the run if its terminal event does not arrive within
    # the grace period (a worker that finished cleanly may still have events in flight).
    await _insert(
        session,
        WorkResult(
            id=f"{result.id}.gone",
            work_item_id=runs.launch_item_id(health.run_id),
            kind=RUN_WORKER_EXITED,
            ok=False,
            payload={"run_id": health.run_id, "exit_code": None},
            created_at=result.created_at,
        ),
    )


async def _apply_worker_exit(
    session: AsyncSession, worker_exit: _WorkerExit, result: WorkResult
) -> None:
    # Exit code 0 means the worker published (and JetStream stored) all its events, the
    # terminal one last; that event may still be on its way through another relay batch,
    # so a clean exit never fails the run here.
    if worker_exit.exit_code == 0:
        return
    status = await runs.run_status(session, worker_exit.run_id)
    if status is None or status.is_terminal:
        return
    if status == RunStatus.CANCELING:
        # Killed after the grace period (or died) while being terminated: that is the
        # cancellation the user asked for, not a failure.
        runs.add_control_event(
            session,
            worker_exit.run_id,
            EventType.RUN_CANCELED,
            message=f"run canceled: its worker stopped with exit code {worker_exit.exit_code}",
            timestamp=result.created_at,
            data={"exit_code": worker_exit.exit_code},
        )
        await runs.advance_status(
            session, worker_exit.run_id, RunStatus.CANCELED, result.created_at
        )
        return
    runs.add_control_event(
        session,
        worker_exit.run_id,
        EventType.ENGINE_ERROR,
        message=f"run worker exited with code {worker_exit.exit_code} before the run finished",
        timestamp=result.created_at,
        error=result.error,
        data={"exit_code": worker_exit.exit_code},
    )
    await runs.advance_status(session, worker_exit.run_id, RunStatus.FAILURE, result.created_at)

"""Work results: stored once by their natural key, and what each one changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane import terminate
from tether.controlplane.db.models import WorkItemRow, WorkResultRow, WorkStatus
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.errors import BadInputError, describe_validation_error
from tether.controlplane.store import locations, runs
from tether.controlplane.uploads import Refusal
from tether.controlplane.workqueue import WorkQueue
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.errors import ContractError
from tether.shared.wire.runs import EventType, RunStatus
from tether.shared.wire.snapshots import LocationSnapshot, snapshot_from_payload
from tether.shared.wire.work import (
    ReportKind,
    RunHealth,
    RunLaunched,
    RunTerminated,
    RunWorkerExited,
    WorkKind,
    WorkResult,
)
from tether.shared.wire.workspecs import REPORT_SPECS, result_spec


@dataclass(frozen=True)
class _Parsed:
    result: WorkResult
    item: WorkItemRow
    #: The payload in its kind's result model (see _EFFECTS), when its effect reads it.
    typed: Any = None


@dataclass(frozen=True)
class _Context:
    session: AsyncSession
    deployment_id: str
    queue: WorkQueue | None


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
            return f"kind {str(result.kind)!r} does not match its work item's kind {item.kind!r}"
    elif result.id.startswith(f"{item.id}.") and len(result.id) > len(item.id) + 1:
        report = REPORT_SPECS.get(result.kind)
        if report is None or item.kind not in report.about:
            return (
                f"a report {result.id!r} about a {item.kind} work item cannot be of kind "
                f"{str(result.kind)!r}"
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
    effect = _EFFECTS.get(result.kind)
    if effect is None or not (result.ok or effect.failed_typed):
        return _Parsed(result, item)
    if effect.parse is not None:
        return _Parsed(result, item, effect.parse(result, snapshot_max_bytes))
    return _Parsed(result, item, result_spec(result.kind).result_of(result))


def _parse_snapshot(result: WorkResult, max_bytes: int | None) -> LocationSnapshot:
    # Plain, or zlib-compressed when large (see tether.shared.wire.snapshots).
    return snapshot_from_payload(
        result.payload,
        max_bytes=max_bytes,
        limit_name="TETHER_CONTROLPLANE_SNAPSHOT_MAX_BYTES",
    )


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
    effect = _EFFECTS.get(result.kind)
    if effect is not None:
        await effect.apply(_Context(session, deployment_id, queue), entry, entry.typed)


async def _apply_load(ctx: _Context, entry: _Parsed, snapshot: LocationSnapshot | None) -> None:
    location = entry.item.location_name
    if snapshot is not None:
        await locations.mark_loaded(ctx.session, ctx.deployment_id, location, snapshot)
    else:
        await locations.mark_load_error(
            ctx.session, ctx.deployment_id, location, entry.result.error
        )


async def _apply_launch(ctx: _Context, entry: _Parsed, launched: RunLaunched | None) -> None:
    session, item, result = ctx.session, entry.item, entry.result
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
        if ctx.queue is not None:
            await _interrupt_if_canceling(session, ctx.queue, ctx.deployment_id, run_id)
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
    run_id: str,
) -> None:
    # Termination was requested while the launch was on its way: the terminate_run item may
    # have reached the launcher first and found nothing to stop, so ask again now.
    if await runs.run_status(session, run_id) == RunStatus.CANCELING:
        run = await runs.get_run(session, deployment_id, run_id)
        if run is not None:
            await terminate.request_interrupt(session, queue, run)


async def _apply_terminate(ctx: _Context, entry: _Parsed, terminated: RunTerminated | None) -> None:
    if terminated is None or terminated.signalled:
        return  # the worker reports RUN_CANCELED itself (or its exit does)
    # Nothing was running: once no launch is still on its way, the run is over.
    session, result, run_id = ctx.session, entry.result, terminated.run_id
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


async def _apply_health(ctx: _Context, entry: _Parsed, health: RunHealth | None) -> None:
    if health is None:
        return  # the launcher could not tell
    session, queue, result = ctx.session, ctx.queue, entry.result
    status = await runs.run_status(session, health.run_id)
    if status is None or status.is_terminal:
        return
    if health.alive:
        if status == RunStatus.CANCELING and queue is not None:
            # Still running although termination was asked: ask again (the launcher
            # SIGKILLs after its grace period), in case the first request was lost.
            run = await runs.get_run(session, ctx.deployment_id, health.run_id)
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
    report = REPORT_SPECS[ReportKind.RUN_WORKER_EXITED]
    await _insert(
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


async def _apply_worker_exit(ctx: _Context, entry: _Parsed, worker_exit: RunWorkerExited) -> None:
    session, result = ctx.session, entry.result
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


@dataclass(frozen=True)
class _Effect:
    """What storing a new result of one kind changes, beyond finishing its work item."""

    #: Called with the context, the entry, and its payload in the kind's result model
    #: (None for a failed result, unless ``failed_typed``).
    apply: Callable[[_Context, _Parsed, Any], Awaitable[None]]
    #: Parse the payload of failed results too (reports always carry theirs).
    failed_typed: bool = False
    #: Parses the payload instead of the spec's result model (given the snapshot limit).
    parse: Callable[[WorkResult, int | None], BaseModel] | None = None


#: Result kinds (of WORK_SPECS and REPORT_SPECS) whose results change more than their work
#: item; the results of the others are read where they are awaited (daemons, agent calls).
_EFFECTS: Mapping[WorkKind | ReportKind, _Effect] = {
    WorkKind.LOAD_LOCATION: _Effect(_apply_load, parse=_parse_snapshot),
    WorkKind.LAUNCH_RUN: _Effect(_apply_launch),
    WorkKind.TERMINATE_RUN: _Effect(_apply_terminate),
    WorkKind.CHECK_RUN_HEALTH: _Effect(_apply_health),
    ReportKind.RUN_WORKER_EXITED: _Effect(_apply_worker_exit, failed_typed=True),
}

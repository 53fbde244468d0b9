"""Work results: stored once by their natural key, and what each one changes.

A result is checked against the work item it answers, stored (idempotent on its id), its
item finished, and its effect applied: a location's snapshot, or (for the kinds about a
run) the run's next state, which :mod:`tether.controlplane.runs.lifecycle` decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import WorkItemRow
from tether.controlplane.errors import BadInputError, describe_validation_error
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs import lifecycle
from tether.controlplane.store import locations, workitems
from tether.controlplane.store.uploads import Refusal
from tether.shared.wire.errors import ContractError
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
        if await workitems.insert_result(session, entry.result):
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
        # Only a ReportKind names a report (a WorkKind is its item's main result).
        report = REPORT_SPECS.get(result.kind) if isinstance(result.kind, ReportKind) else None
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
    items = await workitems.items_of(session, deployment_id, (r.work_item_id for _, r in results))
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


async def _apply(
    session: AsyncSession, deployment_id: str, entry: _Parsed, queue: WorkQueue | None
) -> None:
    result, item = entry.result, entry.item
    if result.kind == item.kind:
        # The main result of the item (not a later report about it): the item is finished.
        await workitems.finish_item(session, item.id, ok=result.ok)
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
    await lifecycle.apply_launch(
        ctx.session, ctx.queue, ctx.deployment_id, entry.item, entry.result, launched
    )


async def _apply_terminate(ctx: _Context, entry: _Parsed, terminated: RunTerminated | None) -> None:
    await lifecycle.apply_terminate(
        ctx.session, ctx.queue, ctx.deployment_id, entry.result, terminated
    )


async def _apply_health(ctx: _Context, entry: _Parsed, health: RunHealth | None) -> None:
    if health is not None:  # None: the launcher could not tell
        await lifecycle.apply_health(
            ctx.session, ctx.queue, ctx.deployment_id, health, entry.result
        )


async def _apply_worker_exit(ctx: _Context, entry: _Parsed, exited: RunWorkerExited) -> None:
    await lifecycle.apply_worker_exit(ctx.session, exited.run_id, exited.exit_code, entry.result)


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

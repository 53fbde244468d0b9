"""Work results: stored once by their natural key, and what each one changes.

A result is checked against the work item it answers, stored (idempotent on its id), its
item finished, and its effect applied: a location's snapshot, or (for the kinds about a
run) the run's next state, which :mod:`tether.controlplane.runs.lifecycle` decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import WorkItemRow
from tether.controlplane.errors import BadInputError, describe_validation_error
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs import lifecycle
from tether.controlplane.store import locations, workitems
from tether.controlplane.uploads import Refusal
from tether.shared.wire.errors import ContractError
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


async def _apply(
    session: AsyncSession, deployment_id: str, entry: _Parsed, queue: WorkQueue | None
) -> None:
    result, item = entry.result, entry.item
    if result.kind == item.kind:
        # The main result of the item (not a later report about it): the item is finished.
        await workitems.finish_item(session, item.id, ok=result.ok)
    if result.kind == WorkKind.LOAD_LOCATION:
        if entry.snapshot is not None:
            await locations.mark_loaded(session, deployment_id, item.location_name, entry.snapshot)
        else:
            await locations.mark_load_error(
                session, deployment_id, item.location_name, result.error
            )
    elif result.kind == WorkKind.LAUNCH_RUN:
        await lifecycle.apply_launch(session, queue, deployment_id, item, result)
    elif result.kind == WorkKind.TERMINATE_RUN:
        await lifecycle.apply_terminate(session, result)
    elif entry.health is not None:
        await lifecycle.apply_health(session, queue, deployment_id, entry.health, result)
    elif entry.worker_exit is not None:
        exited = entry.worker_exit
        await lifecycle.apply_worker_exit(session, exited.run_id, exited.exit_code, result)

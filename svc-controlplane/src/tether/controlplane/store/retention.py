"""Retention: delete the history older than a cutoff, in batches.

What goes: runs that ended before the cutoff (by the control plane's clock,
``status_changed_at``) with everything recorded about them (events, tags, event-stream
state, lost-event reports, compute-log chunks and pointers, a pending retry), answered
work items created before it with their results, and ended ticks before it.

What stays: every run still going; a run that recorded an asset materialization (an
asset's history is read from it); each schedule's or sensor's newest tick (the scheduler
reads its last run key and whether it ever ticked). Compute logs kept in the customer's
bucket lose only their pointers here: the objects are the bucket's lifecycle rules' to
expire.

``deployment_id`` narrows a prune to one deployment (``tether controlplane prune`` gives
each deployment its own cutoff, from its ``retention_days`` setting).

Each batch is its own transaction, so a prune of years of history never holds one long
transaction (or its locks) open, and an interrupted prune keeps what it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import (
    AssetMaterializationRow,
    ComputeLogChunk,
    ComputeLogPointer,
    Instigator,
    InstigatorTick,
    LostRunEvent,
    PendingRetry,
    Run,
    RunEventRow,
    RunEventStream,
    RunTag,
    TickStatus,
    WorkItemRow,
    WorkResultRow,
    WorkStatus,
)
from tether.controlplane.store.runs import launch_item_id
from tether.shared.wire.runs import RunStatus

#: Rows of a run deleted with it, child tables first.
RUN_CHILDREN: tuple[Any, ...] = (
    RunEventRow,
    RunTag,
    RunEventStream,
    LostRunEvent,
    ComputeLogChunk,
    ComputeLogPointer,
    PendingRetry,
)
#: Runs (or work items, or ticks) one batch deletes.
DEFAULT_BATCH = 500


@dataclass
class PruneCounts:
    """Rows deleted (or, in a dry run, that would be) per table."""

    runs: int = 0
    run_events: int = 0
    run_tags: int = 0
    #: Event-stream states, lost-event reports, compute-log chunks and pointers, retries.
    run_children: int = 0
    work_items: int = 0
    work_results: int = 0
    ticks: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by table, as the CLI prints them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _ended_runs(cutoff: float, deployment_id: str | None = None) -> Any:
    terminal = [str(s) for s in RunStatus if s.is_terminal]
    stmt = select(Run.id).where(
        Run.status.in_(terminal),
        Run.status_changed_at < cutoff,
        ~exists().where(AssetMaterializationRow.run_id == Run.id),
    )
    return stmt if deployment_id is None else stmt.where(Run.deployment_id == deployment_id)


def _answered_items(cutoff: float, deployment_id: str | None = None) -> Any:
    unfinished = [str(s) for s in RunStatus if not s.is_terminal]
    stmt = select(WorkItemRow.id).where(
        WorkItemRow.created_at < cutoff,
        WorkItemRow.status.in_([str(WorkStatus.DONE), str(WorkStatus.FAILED)]),
        # A run still going keeps its launch item: it says the run was launched, and the
        # worker's exit is reported about it.
        ~exists().where(launch_item_id("") + Run.id == WorkItemRow.id, Run.status.in_(unfinished)),
    )
    if deployment_id is None:
        return stmt
    return stmt.where(WorkItemRow.deployment_id == deployment_id)


def _ended_ticks(cutoff: float, deployment_id: str | None = None) -> Any:
    newer = InstigatorTick.__table__.alias("newer")
    stmt = select(InstigatorTick.id).where(
        InstigatorTick.created_at < cutoff,
        InstigatorTick.status != str(TickStatus.STARTED),
        # Never an instigator's newest tick.
        exists().where(
            newer.c.instigator_id == InstigatorTick.instigator_id,
            newer.c.tick_time > InstigatorTick.tick_time,
        ),
    )
    if deployment_id is None:
        return stmt
    of_deployment = select(Instigator.id).where(Instigator.deployment_id == deployment_id)
    return stmt.where(InstigatorTick.instigator_id.in_(of_deployment))


async def _count(session: AsyncSession, stmt: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


async def _delete_in(session: AsyncSession, table: Any, column: Any, ids: Sequence[Any]) -> int:
    result = await session.execute(
        delete(table).where(column.in_(list(ids))).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def prune(
    db: Database,
    *,
    cutoff: float,
    batch: int = DEFAULT_BATCH,
    dry_run: bool = False,
    deployment_id: str | None = None,
) -> PruneCounts:
    """Delete the history older than ``cutoff`` (epoch seconds), of ``deployment_id`` or of
    every deployment; what was (or, with ``dry_run``, would be) deleted."""
    counts = PruneCounts()
    d = deployment_id
    if dry_run:
        async with db.reading() as session:
            runs = _ended_runs(cutoff, d).subquery()
            counts.runs = await _count(session, select(runs.c.id))
            counts.run_events = await _count(
                session, select(RunEventRow.id).where(RunEventRow.run_id.in_(select(runs.c.id)))
            )
            counts.run_tags = await _count(
                session, select(RunTag.id).where(RunTag.run_id.in_(select(runs.c.id)))
            )
            for table in RUN_CHILDREN[2:]:
                counts.run_children += await _count(
                    session, select(table.run_id).where(table.run_id.in_(select(runs.c.id)))
                )
            items = _answered_items(cutoff, d).subquery()
            counts.work_items = await _count(session, select(items.c.id))
            counts.work_results = await _count(
                session,
                select(WorkResultRow.id).where(WorkResultRow.work_item_id.in_(select(items.c.id))),
            )
            counts.ticks = await _count(session, _ended_ticks(cutoff, d))
        return counts

    while True:
        async with db.transaction() as session:
            ids = list((await session.execute(_ended_runs(cutoff, d).limit(batch))).scalars())
            if not ids:
                break
            counts.run_events += await _delete_in(session, RunEventRow, RunEventRow.run_id, ids)
            counts.run_tags += await _delete_in(session, RunTag, RunTag.run_id, ids)
            for table in RUN_CHILDREN[2:]:
                counts.run_children += await _delete_in(session, table, table.run_id, ids)
            counts.runs += await _delete_in(session, Run, Run.id, ids)
    while True:
        async with db.transaction() as session:
            ids = list((await session.execute(_answered_items(cutoff, d).limit(batch))).scalars())
            if not ids:
                break
            counts.work_results += await _delete_in(
                session, WorkResultRow, WorkResultRow.work_item_id, ids
            )
            counts.work_items += await _delete_in(session, WorkItemRow, WorkItemRow.id, ids)
    while True:
        async with db.transaction() as session:
            ids = list((await session.execute(_ended_ticks(cutoff, d).limit(batch))).scalars())
            if not ids:
                break
            counts.ticks += await _delete_in(session, InstigatorTick, InstigatorTick.id, ids)
    return counts

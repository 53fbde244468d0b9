"""Schedule and sensor ticks (``instigator_ticks``): the statements on them.

Each function takes the caller's session and never commits: the daemons decide the
transactions. The idempotency of ticks rests on two statements here: the insert of a tick
does nothing when ``UNIQUE(instigator_id, tick_time)`` already has it, and :func:`claim`
moves a tick out of STARTED for exactly one caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import (
    Instigator,
    InstigatorTick,
    Run,
    RunTag,
    TickStatus,
    WorkItemRow,
    WorkResultRow,
)
from tether.controlplane.db.statements import rowcount, upsert_insert
from tether.shared.wire.base import ErrorInfo


async def insert_started(
    session: AsyncSession, instigator_id: int, tick_time: float, now: float
) -> int | None:
    """Add a STARTED tick; return its id, or None when that tick already exists."""
    return (
        await session.execute(
            upsert_insert(session, InstigatorTick.__table__)
            .values(
                instigator_id=instigator_id,
                tick_time=tick_time,
                status=str(TickStatus.STARTED),
                run_ids=[],
                run_keys=[],
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["instigator_id", "tick_time"])
            .returning(InstigatorTick.__table__.c.id)
        )
    ).scalar_one_or_none()


async def set_work_item(
    session: AsyncSession, tick_id: int, item_id: str, *, cursor: str | None = None
) -> None:
    """Name the work item that evaluates tick ``tick_id`` (and the cursor the control
    plane chose for the tick, if it chose one)."""
    await session.execute(
        update(InstigatorTick)
        .where(InstigatorTick.id == tick_id)
        .values(work_item_id=item_id, cursor=cursor)
        .execution_options(synchronize_session=False)
    )


async def insert_skipped(
    session: AsyncSession,
    instigator_id: int,
    tick_times: Sequence[float],
    reasons: Sequence[str],
    now: float,
) -> None:
    """Add SKIPPED ticks with their reasons, in one multi-row insert; a tick already
    recorded (by another scheduler) stays as it was."""
    rows = [
        {
            "instigator_id": instigator_id,
            "tick_time": tick_time,
            "status": str(TickStatus.SKIPPED),
            "run_ids": [],
            "run_keys": [],
            "skip_reason": reason,
            "created_at": now,
            "updated_at": now,
        }
        for tick_time, reason in zip(tick_times, reasons, strict=True)
    ]
    await session.execute(
        upsert_insert(session, InstigatorTick.__table__)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["instigator_id", "tick_time"])
    )


async def answered(
    session: AsyncSession, kind: str
) -> list[tuple[InstigatorTick, Instigator, WorkResultRow]]:
    """STARTED ticks of ``kind`` (schedule/sensor) whose evaluation result has arrived."""
    rows = (
        await session.execute(
            select(InstigatorTick, Instigator, WorkResultRow)
            .join(Instigator, Instigator.id == InstigatorTick.instigator_id)
            # The main result of a work item has the item's id as its own id.
            .join(WorkResultRow, WorkResultRow.id == InstigatorTick.work_item_id)
            .where(InstigatorTick.status == str(TickStatus.STARTED), Instigator.kind == kind)
            .order_by(InstigatorTick.tick_time)
        )
    ).all()
    return [(tick, state, result) for tick, state, result in rows]


async def overdue(
    session: AsyncSession, kind: str, before: float
) -> list[tuple[InstigatorTick, Instigator]]:
    """STARTED ticks of ``kind`` created before ``before`` that still have no result."""
    rows = (
        await session.execute(
            select(InstigatorTick, Instigator)
            .join(Instigator, Instigator.id == InstigatorTick.instigator_id)
            .outerjoin(WorkResultRow, WorkResultRow.id == InstigatorTick.work_item_id)
            .where(
                InstigatorTick.status == str(TickStatus.STARTED),
                Instigator.kind == kind,
                InstigatorTick.created_at < before,
                WorkResultRow.id.is_(None),
            )
        )
    ).all()
    return [(tick, state) for tick, state in rows]


async def claim(session: AsyncSession, tick_id: int, now: float) -> bool:
    """Take the right to finish tick ``tick_id``: true for exactly one caller.

    On PostgreSQL the update locks the row, so a concurrent caller waits, then sees the
    tick no longer STARTED; SQLite has one writer at a time anyway.
    """
    result = await session.execute(
        update(InstigatorTick)
        .where(InstigatorTick.id == tick_id, InstigatorTick.status == str(TickStatus.STARTED))
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(result))


async def finish(
    session: AsyncSession,
    tick_id: int,
    *,
    status: TickStatus,
    run_ids: list[str],
    run_keys: list[str],
    skip_reason: str | None,
    error: ErrorInfo | None,
    cursor: str | None,
    now: float,
) -> None:
    """Write a claimed tick's outcome."""
    values: dict[str, Any] = {
        "status": str(status),
        "run_ids": run_ids,
        "run_keys": run_keys,
        "skip_reason": skip_reason,
        "error": error.model_dump(mode="json") if error else None,
        "cursor": cursor,
        "updated_at": now,
    }
    await session.execute(
        update(InstigatorTick)
        .where(InstigatorTick.id == tick_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def traceparent_of(session: AsyncSession, tick: InstigatorTick) -> str | None:
    """The trace of ``tick`` (carried by its evaluation work item)."""
    if tick.work_item_id is None:
        return None
    return await session.scalar(
        select(WorkItemRow.traceparent).where(WorkItemRow.id == tick.work_item_id)
    )


async def run_of_key(
    session: AsyncSession, deployment_id: str, owner_tag: str, owner: str, run_key: str
) -> str | None:
    """A run the schedule/sensor ``owner`` already created for ``run_key``, if any."""
    return await session.scalar(
        select(Run.id)
        .join(RunTag, and_(RunTag.run_id == Run.id, RunTag.key == owner_tag))
        .where(
            Run.deployment_id == deployment_id,
            Run.run_key == run_key,
            RunTag.value == owner,
        )
        .limit(1)
    )


async def has_started(session: AsyncSession, instigator_id: int) -> bool:
    """Whether the instigator has a tick in flight (STARTED)."""
    tick = await session.scalar(
        select(InstigatorTick.id)
        .where(
            InstigatorTick.instigator_id == instigator_id,
            InstigatorTick.status == str(TickStatus.STARTED),
        )
        .limit(1)
    )
    return tick is not None


async def last_run_key(session: AsyncSession, instigator_id: int) -> str | None:
    """The last run key of the instigator's newest SUCCESS tick."""
    rows = await session.execute(
        select(InstigatorTick.run_keys)
        .where(
            InstigatorTick.instigator_id == instigator_id,
            InstigatorTick.status == str(TickStatus.SUCCESS),
        )
        .order_by(InstigatorTick.tick_time.desc())
        .limit(1)
    )
    keys = rows.scalar_one_or_none()
    return keys[-1] if keys else None


async def move_last_tick(
    session: AsyncSession, instigator_id: int, last: float | None, now: float
) -> bool:
    """Move the instigator's ``last_tick_at`` from ``last`` to ``now``; False when another
    process moved it first (optimistic: only the one that moves it starts the tick)."""
    moved = await session.execute(
        update(Instigator)
        .where(
            Instigator.id == instigator_id,
            Instigator.last_tick_at.is_(None) if last is None else Instigator.last_tick_at == last,
        )
        .values(last_tick_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(moved))

"""Queries of run retries, run timeouts and schedule overlap: which failed runs wait for
their retry decision, the attempts of a root run, the runs the monitor bounds, and a
schedule's unfinished runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import PendingRetry, Run, RunEventRow, RunTag
from tether.controlplane.db.statements import rowcount
from tether.shared.wire.runs import EventType, RunStatus

_UNFINISHED = [str(s) for s in RunStatus if not s.is_terminal]


async def has_step_failure(session: AsyncSession, run_id: str) -> bool:
    """Whether run ``run_id`` has a STEP_FAILURE event."""
    found = await session.scalar(
        select(
            exists().where(
                RunEventRow.run_id == run_id,
                RunEventRow.event_type == str(EventType.STEP_FAILURE),
            )
        )
    )
    return bool(found)


async def pending_retries(session: AsyncSession, limit: int) -> Sequence[str]:
    """Ids of the failed runs whose retry is not decided yet, oldest failure first, of
    every deployment."""
    stmt = (
        select(PendingRetry.run_id)
        .order_by(PendingRetry.failed_at, PendingRetry.run_id)
        .limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()


async def claim_retry(session: AsyncSession, run_id: str) -> bool:
    """Take run ``run_id``'s retry decision (delete its pending row); False if another
    retrier took it first. The decision commits with the caller's transaction, so a crash
    before the commit leaves it pending."""
    result = await session.execute(delete(PendingRetry).where(PendingRetry.run_id == run_id))
    return bool(rowcount(result))


async def attempts_of(session: AsyncSession, deployment_id: str, root_run_id: str) -> Sequence[Run]:
    """The root run ``root_run_id`` and every run of its chain, in creation order."""
    stmt = (
        select(Run)
        .where(
            Run.deployment_id == deployment_id,
            or_(Run.id == root_run_id, Run.root_run_id == root_run_id),
        )
        .order_by(Run.created_at, Run.id)
    )
    return (await session.execute(stmt)).scalars().all()


@dataclass(frozen=True)
class RunningRun:
    """What the run monitor needs of an unfinished run to bound its time."""

    id: str
    deployment_id: str
    location_name: str
    tags: dict[str, str]
    started_at: float | None
    status_changed_at: float | None


async def runs_in(session: AsyncSession, statuses: Sequence[RunStatus]) -> list[RunningRun]:
    """Every run in ``statuses``, of every deployment (bounded by the runs in flight)."""
    rows = await session.execute(
        select(
            Run.id,
            Run.deployment_id,
            Run.location_name,
            Run.tags,
            Run.started_at,
            Run.status_changed_at,
        ).where(Run.status.in_([str(s) for s in statuses]))
    )
    return [
        RunningRun(run_id, deployment, location, dict(tags or {}), started, changed)
        for run_id, deployment, location, tags, started, changed in rows
    ]


async def unfinished_run_of(
    session: AsyncSession, deployment_id: str, location_name: str, tag: str, value: str
) -> tuple[str, RunStatus] | None:
    """An unfinished run of ``location_name`` tagged ``tag=value`` (the oldest), if any."""
    row = (
        await session.execute(
            select(Run.id, Run.status)
            .where(
                Run.deployment_id == deployment_id,
                Run.location_name == location_name,
                Run.status.in_(_UNFINISHED),
                exists().where(RunTag.run_id == Run.id, RunTag.key == tag, RunTag.value == value),
            )
            .order_by(Run.created_at, Run.id)
            .limit(1)
        )
    ).first()
    return (row[0], RunStatus(row[1])) if row is not None else None

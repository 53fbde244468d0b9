"""Backfills: created by a user, advanced by the backfill daemon, read with their runs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import Backfill, BackfillStatus, Run
from tether.shared.messages import new_id


async def create_backfill(
    session: AsyncSession,
    *,
    deployment_id: str,
    location_name: str,
    repository_name: str | None,
    job_name: str,
    partition_set_name: str,
    partition_keys: Sequence[str],
    tags: dict[str, str] | None = None,
    now: float,
) -> Backfill:
    """Add a REQUESTED backfill over ``partition_keys`` (in the order given)."""
    backfill = Backfill(
        id=new_id(),
        deployment_id=deployment_id,
        location_name=location_name,
        repository_name=repository_name,
        job_name=job_name,
        partition_set_name=partition_set_name,
        partition_keys=list(partition_keys),
        run_config={},
        tags=dict(tags or {}),
        status=str(BackfillStatus.REQUESTED),
        launched=0,
        created_at=now,
        updated_at=now,
    )
    session.add(backfill)
    await session.flush()
    return backfill


async def get_backfill(
    session: AsyncSession, deployment_id: str, backfill_id: str
) -> Backfill | None:
    """The backfill ``backfill_id`` of ``deployment_id``."""
    return await session.scalar(
        select(Backfill).where(Backfill.deployment_id == deployment_id, Backfill.id == backfill_id)
    )


async def list_backfills(
    session: AsyncSession, deployment_id: str, *, limit: int = 50
) -> Sequence[Backfill]:
    """The newest backfills of ``deployment_id``."""
    stmt = (
        select(Backfill)
        .where(Backfill.deployment_id == deployment_id)
        .order_by(Backfill.created_at.desc())
        .limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()


async def backfill_runs(session: AsyncSession, backfill_id: str) -> Sequence[Run]:
    """The runs of a backfill, oldest first."""
    stmt = select(Run).where(Run.backfill_id == backfill_id).order_by(Run.created_at)
    return (await session.execute(stmt)).scalars().all()

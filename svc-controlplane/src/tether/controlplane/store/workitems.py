"""Work items and their results: the rows of the work queue, and the statements on them.

Every function takes the caller's session and never commits: the work queue, the result
handling and the run lifecycle decide the transactions (a claim is one, an upload of
results is one), and with them the at-least-once and idempotency guarantees.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from tether.controlplane.db.models import Deployment, WorkItemRow, WorkResultRow, WorkStatus
from tether.controlplane.db.statements import rowcount, upsert_insert
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkKind, WorkResult


def new_item_row(
    *,
    item_id: str,
    deployment_id: str,
    kind: WorkKind,
    location: LocationConfig,
    payload: dict[str, Any],
    traceparent: str | None,
    expires_at: float | None,
) -> WorkItemRow:
    """A PENDING work item row (not added to any session)."""
    return WorkItemRow(
        id=item_id,
        deployment_id=deployment_id,
        kind=str(kind),
        location_name=location.name,
        substrate=location.substrate,
        agent_queue=location.agent_queue,
        location=location.model_dump(mode="json"),
        payload=payload,
        traceparent=traceparent,
        status=WorkStatus.PENDING,
        attempts=0,
        created_at=time.time(),
        expires_at=expires_at,
    )


def add_item(
    session: AsyncSession,
    *,
    item_id: str,
    deployment_id: str,
    kind: WorkKind,
    location: LocationConfig,
    payload: dict[str, Any],
    traceparent: str | None,
    expires_at: float | None,
) -> None:
    """Add a PENDING work item to ``session``'s transaction."""
    session.add(
        new_item_row(
            item_id=item_id,
            deployment_id=deployment_id,
            kind=kind,
            location=location,
            payload=payload,
            traceparent=traceparent,
            expires_at=expires_at,
        )
    )


async def insert_item_if_absent(session: AsyncSession, row: WorkItemRow) -> bool:
    """Insert ``row`` unless an item of its id exists (INSERT ... ON CONFLICT DO NOTHING:
    of two transactions inserting one id, the second waits for the first and inserts
    nothing, instead of failing); return whether it was inserted."""
    values = {column.key: getattr(row, column.key) for column in WorkItemRow.__table__.columns}
    stmt = upsert_insert(session, WorkItemRow).values(**values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["id"]).returning(WorkItemRow.id)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def get_item(session: AsyncSession, item_id: str) -> WorkItemRow | None:
    """The work item ``item_id``, of any deployment."""
    return await session.get(WorkItemRow, item_id)


async def items_of(
    session: AsyncSession, deployment_id: str, ids: Iterable[str]
) -> dict[str, WorkItemRow]:
    """The work items of ``deployment_id`` among ``ids``, by id."""
    rows = await session.execute(
        select(WorkItemRow).where(
            WorkItemRow.deployment_id == deployment_id, WorkItemRow.id.in_(set(ids))
        )
    )
    return {row.id: row for row in rows.scalars()}


def _claimable(
    deployment_id: str, substrates: Sequence[str], queues: Sequence[str], now: float
) -> ColumnElement[bool]:
    return and_(
        WorkItemRow.deployment_id == deployment_id,
        WorkItemRow.substrate.in_(list(substrates)),
        WorkItemRow.agent_queue.in_(list(queues)),
        or_(
            WorkItemRow.status == WorkStatus.PENDING,
            and_(
                WorkItemRow.status == WorkStatus.CLAIMED,
                WorkItemRow.lease_expires_at < now,
            ),
        ),
        or_(WorkItemRow.expires_at.is_(None), WorkItemRow.expires_at > now),
    )


async def claim_items(
    session: AsyncSession,
    *,
    deployment_id: str,
    agent_id: str,
    substrates: Sequence[str],
    queues: Sequence[str],
    max_items: int,
    lease_s: float,
    now: float,
) -> list[WorkItemRow]:
    """Lease up to ``max_items`` claimable items (oldest first) to ``agent_id``.

    Claimable: PENDING, or CLAIMED with an expired lease; of one of ``substrates`` and
    one of the agent ``queues``; not past its ``expires_at``.
    """
    claimable = _claimable(deployment_id, substrates, queues, now)
    # SKIP LOCKED lets concurrent claimers on PostgreSQL take different rows; SQLite
    # ignores it, but there the whole transaction already holds the write lock.
    candidates = (
        (
            await session.execute(
                select(WorkItemRow.id)
                .where(claimable)
                .order_by(WorkItemRow.created_at, WorkItemRow.id)
                .limit(max_items)
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    claimed: list[WorkItemRow] = []
    for item_id in candidates:
        # Conditional update: only one claimer can move a row out of 'claimable'.
        result = await session.execute(
            update(WorkItemRow)
            .where(WorkItemRow.id == item_id, claimable)
            .values(
                status=WorkStatus.CLAIMED,
                lease_owner=agent_id,
                lease_expires_at=now + lease_s,
                attempts=WorkItemRow.attempts + 1,
            )
            .returning(WorkItemRow)
        )
        row = result.scalar_one_or_none()
        if row is not None:
            claimed.append(row)
    return claimed


async def count_undispatched(session: AsyncSession) -> dict[tuple[str, str, str], int]:
    """(deployment, kind, status) -> how many items are PENDING or CLAIMED (not yet on an
    agent's NATS), of every deployment.

    One statement per deployment, each a range of ``ix_work_items_claimable`` (which leads
    with the deployment): never a scan of the whole, ever-growing, table.
    """
    deployments = (await session.scalars(select(Deployment.id))).all()
    counts: dict[tuple[str, str, str], int] = {}
    for deployment_id in deployments:
        rows = await session.execute(
            select(WorkItemRow.kind, WorkItemRow.status, func.count())
            .where(
                WorkItemRow.deployment_id == deployment_id,
                WorkItemRow.status.in_([WorkStatus.PENDING, WorkStatus.CLAIMED]),
            )
            .group_by(WorkItemRow.kind, WorkItemRow.status)
        )
        for kind, status, count in rows:
            counts[(deployment_id, kind, status)] = count
    return counts


async def ack_items(
    session: AsyncSession, *, deployment_id: str, agent_id: str, ids: Sequence[str]
) -> int:
    """Mark items ``agent_id`` leased as DISPATCHED; return how many were."""
    result = await session.execute(
        update(WorkItemRow)
        .where(
            WorkItemRow.deployment_id == deployment_id,
            WorkItemRow.id.in_(list(ids)),
            WorkItemRow.status == WorkStatus.CLAIMED,
            WorkItemRow.lease_owner == agent_id,
        )
        .values(status=WorkStatus.DISPATCHED, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


async def finish_item(session: AsyncSession, item_id: str, *, ok: bool) -> None:
    """Mark a work item answered: DONE, or FAILED when its result was a failure."""
    await session.execute(
        update(WorkItemRow)
        .where(WorkItemRow.id == item_id)
        .values(status=WorkStatus.DONE if ok else WorkStatus.FAILED, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


async def withdraw_pending(session: AsyncSession, item_id: str) -> bool:
    """Take back a PENDING item (FAILED, never claimed); False when an agent has it."""
    withdrawn = await session.execute(
        update(WorkItemRow)
        .where(WorkItemRow.id == item_id, WorkItemRow.status == WorkStatus.PENDING)
        .values(status=WorkStatus.FAILED)
        .execution_options(synchronize_session=False)
    )
    return rowcount(withdrawn) == 1


#: Statuses of an item no result answered yet.
UNANSWERED = (WorkStatus.PENDING, WorkStatus.CLAIMED, WorkStatus.DISPATCHED)


async def redispatch(session: AsyncSession, item_id: str) -> bool:
    """Offer a DISPATCHED item again (PENDING: the next claim leases it, as a new attempt
    with a new signature); False when it is no longer DISPATCHED (answered meanwhile, or
    another process offered it again first)."""
    offered = await session.execute(
        update(WorkItemRow)
        .where(WorkItemRow.id == item_id, WorkItemRow.status == WorkStatus.DISPATCHED)
        .values(status=WorkStatus.PENDING, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(offered) == 1


async def withdraw_unanswered(session: AsyncSession, item_id: str) -> bool:
    """Give up on an item no result answered (FAILED, never offered again); False when
    a result answered it meanwhile."""
    withdrawn = await session.execute(
        update(WorkItemRow)
        .where(WorkItemRow.id == item_id, WorkItemRow.status.in_(UNANSWERED))
        .values(status=WorkStatus.FAILED, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(withdrawn) == 1


async def reserve_finished(
    session: AsyncSession,
    *,
    item_id: str,
    deployment_id: str,
    kind: WorkKind,
    location_name: str,
    payload: dict[str, Any],
) -> bool:
    """Insert item ``item_id`` as already FAILED (so a later insert of it fails); False
    when the id is already taken."""
    inserted = (
        await session.execute(
            upsert_insert(session, WorkItemRow.__table__)
            .values(
                id=item_id,
                deployment_id=deployment_id,
                kind=str(kind),
                location_name=location_name,
                substrate="",
                location=LocationConfig(name=location_name).model_dump(mode="json"),
                payload=payload,
                status=WorkStatus.FAILED,
                attempts=0,
                created_at=time.time(),
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(WorkItemRow.__table__.c.id)
        )
    ).first()
    return inserted is not None


async def insert_result(session: AsyncSession, result: WorkResult) -> bool:
    """Store ``result`` unless one of its id already is; return whether it was new."""
    return await _insert_result_row(
        session,
        id=result.id,
        work_item_id=result.work_item_id,
        kind=result.kind,
        ok=result.ok,
        payload=result.payload,
        error=result.error.model_dump(mode="json") if result.error else None,
        created_at=result.created_at,
    )


async def insert_record(
    session: AsyncSession,
    *,
    record_id: str,
    item_id: str,
    kind: str,
    payload: dict[str, Any],
    created_at: float,
) -> bool:
    """Store the control plane's own record about item ``item_id`` (a result row of a
    ``kind`` no agent sends) unless a row of its id already is; return whether it was new
    (of processes inserting one id, one wins)."""
    return await _insert_result_row(
        session,
        id=record_id,
        work_item_id=item_id,
        kind=kind,
        ok=False,
        payload=payload,
        error=None,
        created_at=created_at,
    )


async def _insert_result_row(session: AsyncSession, **values: Any) -> bool:
    stmt = (
        upsert_insert(session, WorkResultRow.__table__)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(WorkResultRow.__table__.c.id)
    )
    return (await session.execute(stmt)).first() is not None


async def get_result(session: AsyncSession, result_id: str) -> WorkResultRow | None:
    """The result ``result_id`` (a work item's main result has the item's id)."""
    return await session.get(WorkResultRow, result_id)

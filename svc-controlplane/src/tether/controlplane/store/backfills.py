"""Backfills: created by a user, advanced by the backfill daemon, read with their runs.

``partition_keys`` is the backfill's launch sequence: the partitions in the order the
daemon creates their runs, ``launched`` its cursor. A retry appends the partitions it
re-runs, so a partition may appear more than once; :func:`distinct_keys` gives the
partitions themselves. A partition's newest run tells its state.

Cancel and retry are user actions: a cancel (:func:`tether.controlplane.runs.terminate.
cancel_backfill`) moves the backfill to CANCELED (the daemon only advances REQUESTED
backfills, and claims each with a conditional update on its status, so no run is created
after the cancel committed), then cancels its queued runs and, if asked, terminates its
running ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import Backfill, BackfillStatus, Run, WorkItemRow, WorkResultRow
from tether.controlplane.db.statements import rowcount
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.shared.wire.base import new_id
from tether.shared.wire.runs import RunStatus
from tether.shared.wire.work import WorkKind

#: A partition whose newest run ended so is what a retry runs again.
RETRYABLE = frozenset({str(RunStatus.FAILURE), str(RunStatus.CANCELED)})
_UNFINISHED = [str(s) for s in RunStatus if not s.is_terminal]


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
    asset_selection: Sequence[Sequence[str]] | None = None,
    now: float,
) -> Backfill:
    """Add a REQUESTED backfill over ``partition_keys`` (in the order given); with
    ``asset_selection`` (asset key paths) each run of ``job_name`` materializes only those."""
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
        asset_selection=(
            sorted(list(k) for k in asset_selection) if asset_selection is not None else None
        ),
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


async def backfill_by_id(session: AsyncSession, backfill_id: str) -> Backfill | None:
    """The backfill ``backfill_id``, of any deployment (for the backfill daemon)."""
    return await session.get(Backfill, backfill_id)


async def list_backfills(
    session: AsyncSession,
    deployment_id: str,
    *,
    limit: int = 50,
    offset: int = 0,
    status: BackfillStatus | None = None,
    before: tuple[float, str] | None = None,
) -> Sequence[Backfill]:
    """A page of the backfills of ``deployment_id`` (optionally of one status), newest first;
    ``before``: only those sorted after this ``(created_at, id)`` (a keyset page)."""
    stmt = select(Backfill).where(Backfill.deployment_id == deployment_id)
    if status is not None:
        stmt = stmt.where(Backfill.status == str(status))
    if before is not None:
        stmt = stmt.where(tuple_(Backfill.created_at, Backfill.id) < tuple_(*before))
    # The id breaks ties of equal creation times, so pages never overlap or skip a row.
    stmt = stmt.order_by(Backfill.created_at.desc(), Backfill.id.desc()).limit(limit)
    return (await session.execute(stmt.offset(offset))).scalars().all()


def distinct_keys(keys: Iterable[str]) -> list[str]:
    """The partitions of a launch sequence, each once, in first-launch order."""
    return list(dict.fromkeys(keys))


def latest_runs(runs: Iterable[Run]) -> dict[str, Run]:
    """The newest run of each partition (``runs`` oldest first, as :func:`backfill_runs`)."""
    return {run.partition_key: run for run in runs if run.partition_key is not None}


def retry_keys(backfill: Backfill, runs: Sequence[Run]) -> list[str]:
    """The partitions a retry of ``backfill`` runs, in partition order.

    Those whose newest run FAILED or was CANCELED, and those that never got a run because
    a failure or a cancel stopped the backfill first. Never one that succeeded or whose
    run is still going. Nothing while the backfill is still REQUESTED.
    """
    if backfill.status == BackfillStatus.REQUESTED:
        return []
    keys = list(backfill.partition_keys)
    started = set(keys[: backfill.launched])
    latest = latest_runs(runs)
    out = []
    for key in distinct_keys(keys):
        run = latest.get(key)
        if (run is not None and run.status in RETRYABLE) or (run is None and key not in started):
            out.append(key)
    return out


async def retry_backfill(
    session: AsyncSession, deployment_id: str, backfill_id: str, *, now: float
) -> tuple[Backfill, list[str]]:
    """Make the daemon launch new runs of the partitions :func:`retry_keys` names.

    Their keys move to the end of the launch sequence and the backfill is REQUESTED again;
    partition configs are asked again (the user may have fixed the code since).

    Returns:
        The backfill and the partitions it re-runs.

    Raises:
        NotFoundError: no such backfill.
        BadInputError: still REQUESTED, or nothing to retry.
    """
    backfill = await get_backfill(session, deployment_id, backfill_id)
    if backfill is None:
        raise NotFoundError(f"no backfill {backfill_id!r}")
    if backfill.status == BackfillStatus.REQUESTED:
        raise BadInputError(
            f"backfill {backfill_id} is still launching runs; wait for it or cancel it first"
        )
    keys = retry_keys(backfill, await backfill_runs(session, backfill.id))
    if not keys:
        raise BadInputError(
            f"backfill {backfill_id} has nothing to retry: every partition's newest run "
            "succeeded or is still going"
        )
    launched_keys = list(backfill.partition_keys)[: backfill.launched]
    # Conditional on what was read, so two retries (or a retry racing a cancel) never
    # queue the same partitions twice.
    moved = await session.execute(
        update(Backfill)
        .where(
            Backfill.id == backfill.id,
            Backfill.status == backfill.status,
            Backfill.launched == backfill.launched,
        )
        .values(
            partition_keys=launched_keys + keys,
            status=str(BackfillStatus.REQUESTED),
            error=None,
            retried_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if not rowcount(moved):
        raise BadInputError(f"backfill {backfill_id} changed meanwhile; try again")
    await session.refresh(backfill)
    return backfill, keys


async def backfill_runs(session: AsyncSession, backfill_id: str) -> Sequence[Run]:
    """The runs of a backfill, oldest first."""
    stmt = select(Run).where(Run.backfill_id == backfill_id).order_by(Run.created_at)
    return (await session.execute(stmt)).scalars().all()


async def requested_ids(session: AsyncSession) -> list[str]:
    """Ids of the REQUESTED backfills of every deployment, oldest first."""
    rows = await session.execute(
        select(Backfill.id)
        .where(Backfill.status == str(BackfillStatus.REQUESTED))
        .order_by(Backfill.created_at)
    )
    return list(rows.scalars().all())


async def claim_for_advance(session: AsyncSession, backfill: Backfill, now: float) -> bool:
    """Take the right to advance ``backfill`` as read: False when another daemon advanced
    it meanwhile, or a cancel committed after it was read (the cancel wins)."""
    claimed = await session.execute(
        update(Backfill)
        .where(
            Backfill.id == backfill.id,
            Backfill.launched == backfill.launched,
            Backfill.status == str(BackfillStatus.REQUESTED),
        )
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(claimed))


async def unfinished_run_count(session: AsyncSession, backfill_id: str) -> int:
    """How many runs of the backfill are not finished."""
    count = await session.scalar(
        select(func.count(Run.id)).where(
            Run.backfill_id == backfill_id, Run.status.in_(_UNFINISHED)
        )
    )
    return int(count or 0)


async def has_unfinished_runs(session: AsyncSession, backfill_id: str) -> bool:
    """Whether any run of the backfill is not finished."""
    unfinished = await session.scalar(
        select(Run.id).where(Run.backfill_id == backfill_id, Run.status.in_(_UNFINISHED)).limit(1)
    )
    return unfinished is not None


async def mark_canceled(session: AsyncSession, backfill_id: str, now: float) -> None:
    """Move the backfill to CANCELED (the daemon advances only REQUESTED ones)."""
    await session.execute(
        update(Backfill)
        .where(Backfill.id == backfill_id)
        .values(status=str(BackfillStatus.CANCELED), updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def run_ids_in(
    session: AsyncSession, backfill_id: str, statuses: Iterable[RunStatus]
) -> list[str]:
    """Ids of the backfill's runs in ``statuses``, oldest first."""
    rows = await session.execute(
        select(Run.id)
        .where(Run.backfill_id == backfill_id, Run.status.in_([str(s) for s in statuses]))
        .order_by(Run.created_at)
    )
    return list(rows.scalars().all())


async def partition_answers(
    session: AsyncSession, backfill: Backfill, keys: Sequence[str]
) -> Sequence[tuple[str, float | None, WorkResultRow | None]]:
    """The ``get_partition_config`` items asked for ``keys`` of the backfill's partition
    set since it was created (or last retried), oldest first: (key, the item's expiry, its
    result if any)."""
    since = backfill.retried_at if backfill.retried_at is not None else backfill.created_at
    key_of = WorkItemRow.payload["partition_key"].as_string()
    set_of = WorkItemRow.payload["partition_set_name"].as_string()
    rows = await session.execute(
        select(key_of, WorkItemRow.expires_at, WorkResultRow)
        .outerjoin(WorkResultRow, WorkResultRow.id == WorkItemRow.id)
        .where(
            WorkItemRow.deployment_id == backfill.deployment_id,
            WorkItemRow.kind == str(WorkKind.GET_PARTITION_CONFIG),
            WorkItemRow.location_name == backfill.location_name,
            WorkItemRow.created_at >= since,
            set_of == (backfill.partition_set_name or ""),
            key_of.in_(list(keys)),
        )
        .order_by(WorkItemRow.created_at)
    )
    return [(key, expires_at, result) for key, expires_at, result in rows]

"""Backfills: created by a user, advanced by the backfill daemon, read with their runs.

``partition_keys`` is the backfill's launch sequence: the partitions in the order the
daemon creates their runs, ``launched`` its cursor. A retry appends the partitions it
re-runs, so a partition may appear more than once; :func:`distinct_keys` gives the
partitions themselves. A partition's newest run tells its state.

Cancel and retry are user actions: a cancel moves the backfill to CANCELED (the daemon
only advances REQUESTED backfills, and claims each with a conditional update on its
status, so no run is created after the cancel committed), then cancels its queued runs
and, if asked, terminates its running ones through :mod:`tether.controlplane.runs.terminate`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Backfill, BackfillStatus, Run
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs import terminate
from tether.shared.wire.base import new_id
from tether.shared.wire.runs import RunStatus

log = logging.getLogger(__name__)

#: A partition whose newest run ended so is what a retry runs again.
RETRYABLE = frozenset({str(RunStatus.FAILURE), str(RunStatus.CANCELED)})
_UNFINISHED = [str(s) for s in RunStatus if not s.is_terminal]
_RUNNING = [str(RunStatus.STARTING), str(RunStatus.STARTED)]


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
    session: AsyncSession,
    deployment_id: str,
    *,
    limit: int = 50,
    offset: int = 0,
    status: BackfillStatus | None = None,
) -> Sequence[Backfill]:
    """A page of the backfills of ``deployment_id`` (optionally of one status), newest first."""
    stmt = select(Backfill).where(Backfill.deployment_id == deployment_id)
    if status is not None:
        stmt = stmt.where(Backfill.status == str(status))
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
    if not moved.rowcount:
        raise BadInputError(f"backfill {backfill_id} changed meanwhile; try again")
    await session.refresh(backfill)
    return backfill, keys


async def cancel_backfill(
    db: Database,
    queue: WorkQueue,
    *,
    deployment_id: str,
    backfill_id: str,
    terminate_running: bool,
    now: float,
) -> tuple[Backfill, list[str]]:
    """Stop launching the backfill's partitions and cancel its queued runs.

    With ``terminate_running`` its started runs are terminated too (their launcher
    interrupts them); without, they run to their end. Canceling a CANCELED backfill again
    is allowed (e.g. to terminate what still runs).

    Returns:
        The backfill and the runs asked to stop.

    Raises:
        NotFoundError: no such backfill.
        BadInputError: it already ended and none of its runs is unfinished.
    """
    async with db.transaction() as session:
        backfill = await get_backfill(session, deployment_id, backfill_id)
        if backfill is None:
            raise NotFoundError(f"no backfill {backfill_id!r}")
        if backfill.status in (BackfillStatus.COMPLETED, BackfillStatus.FAILED):
            unfinished = await session.scalar(
                select(Run.id)
                .where(Run.backfill_id == backfill.id, Run.status.in_(_UNFINISHED))
                .limit(1)
            )
            if unfinished is None:
                raise BadInputError(
                    f"backfill {backfill_id} already ended ({backfill.status}) and none of "
                    "its runs is unfinished; nothing to cancel"
                )
        await session.execute(
            update(Backfill)
            .where(Backfill.id == backfill.id)
            .values(status=str(BackfillStatus.CANCELED), updated_at=now)
            .execution_options(synchronize_session=False)
        )
    # Committed: from here on the daemon creates no run of this backfill, so the runs
    # read now are all there will ever be.
    statuses = [str(RunStatus.QUEUED)] + (_RUNNING if terminate_running else [])
    async with db.reading() as session:
        run_ids = list(
            (
                await session.execute(
                    select(Run.id)
                    .where(Run.backfill_id == backfill_id, Run.status.in_(statuses))
                    .order_by(Run.created_at)
                )
            )
            .scalars()
            .all()
        )
    stopped = []
    for run_id in run_ids:
        outcome = await terminate.terminate_run(
            db, queue, deployment_id=deployment_id, run_id=run_id
        )
        # A run that ended meanwhile needs nothing.
        if isinstance(outcome, terminate.Terminating):
            stopped.append(run_id)
    async with db.reading() as session:
        refreshed = await get_backfill(session, deployment_id, backfill_id)
    assert refreshed is not None
    log.info("backfill %s canceled; %d run(s) asked to stop", backfill_id, len(stopped))
    return refreshed, stopped


async def backfill_runs(session: AsyncSession, backfill_id: str) -> Sequence[Run]:
    """The runs of a backfill, oldest first."""
    stmt = select(Run).where(Run.backfill_id == backfill_id).order_by(Run.created_at)
    return (await session.execute(stmt)).scalars().all()

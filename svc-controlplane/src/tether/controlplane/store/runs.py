"""Runs and their events: creation, idempotent event storage, monotonic status."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Text, and_, cast, exists, func, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import changes
from tether.controlplane.db.models import (
    PendingRetry,
    Run,
    RunEventRow,
    RunEventStream,
    RunTag,
    WorkItemRow,
    WorkResultRow,
    WorkStatus,
)
from tether.controlplane.db.statements import rowcount, upsert_insert
from tether.controlplane.errors import BadInputError
from tether.controlplane.store import assets, eventstreams
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.runs import EventType, RunEvent, RunStatus
from tether.shared.wire.work import ReportKind

#: Order of run statuses; a run only ever moves up, and terminal statuses share the top rank
#: so a terminal status never changes (not even to another terminal one).
STATUS_RANK: dict[RunStatus, int] = {
    RunStatus.QUEUED: 0,
    RunStatus.STARTING: 1,
    RunStatus.STARTED: 2,
    RunStatus.CANCELING: 3,
    RunStatus.SUCCESS: 4,
    RunStatus.FAILURE: 4,
    RunStatus.CANCELED: 4,
}


#: Commit topic (:func:`~tether.controlplane.db.engine.changes`): a run began waiting for
#: the run coordinator, or one ended (its slot under the concurrency limits is free).
RUN_QUEUE_CHANGED = "run queue changed"


def launch_item_id(run_id: str) -> str:
    """The id of run ``run_id``'s ``launch_run`` work item (terminate and health find it)."""
    return f"launch-{run_id}"


def create_run(
    session: AsyncSession,
    *,
    run_id: str,
    deployment_id: str,
    location_name: str,
    repository_name: str | None,
    job_name: str,
    run_config: dict[str, Any],
    tags: dict[str, str],
    traceparent: str | None,
    created_at: float,
) -> Run:
    """Add a QUEUED run to the session's transaction."""
    run = Run(
        id=run_id,
        deployment_id=deployment_id,
        location_name=location_name,
        repository_name=repository_name,
        job_name=job_name,
        run_config=run_config,
        tags=tags,
        status=RunStatus.QUEUED,
        created_at=created_at,
        status_changed_at=created_at,
        traceparent=traceparent,
    )
    session.add(run)
    # Tags as rows too, so runs can be filtered and counted by tag on any database.
    session.add_all(RunTag(run_id=run_id, key=key, value=value) for key, value in tags.items())
    return run


def add_control_event(
    session: AsyncSession,
    run_id: str,
    event_type: EventType,
    *,
    message: str = "",
    timestamp: float | None = None,
    error: ErrorInfo | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Add an event the control plane itself emits (``seq`` NULL: outside the worker's order)."""
    session.add(
        RunEventRow(
            run_id=run_id,
            seq=None,
            event_type=str(event_type),
            timestamp=time.time() if timestamp is None else timestamp,
            step_key=None,
            message=message,
            data=data or {},
            error=error.model_dump(mode="json") if error else None,
        )
    )


async def advance_status(
    session: AsyncSession,
    run_id: str,
    status: RunStatus,
    timestamp: float,
    *,
    failure_reason: str | None = None,
) -> bool:
    """Move run ``run_id`` to ``status`` if that is a step forward; return whether it moved.

    One conditional UPDATE, so concurrent uploads cannot move a run backwards. A move to
    FAILURE records ``failure_reason`` and adds the run's pending retry (the run retrier
    decides it, store-driven, so a crash right after this commit loses nothing).
    """
    lower = [s for s, rank in STATUS_RANK.items() if rank < STATUS_RANK[status]]
    # status_changed_at is the control plane's clock (the run monitor compares it with its
    # own); ``timestamp`` may come from an agent's clock.
    values: dict[str, Any] = {"status": str(status), "status_changed_at": time.time()}
    if status == RunStatus.FAILURE:
        values["failure_reason"] = failure_reason
    if status == RunStatus.STARTED:
        values["started_at"] = func.coalesce(Run.started_at, timestamp)
    if status.is_terminal:
        values["ended_at"] = timestamp
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_([str(s) for s in lower]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    moved = bool(rowcount(result))
    if moved and status.is_terminal:
        changes(session, RUN_QUEUE_CHANGED)
    if moved and status == RunStatus.FAILURE:
        # Only the move itself adds it (a terminal status never moves again): at most one.
        session.add(PendingRetry(run_id=run_id, failed_at=time.time()))
    return moved


async def run_status(session: AsyncSession, run_id: str) -> RunStatus | None:
    """The current status of a run, or None if there is no such run."""
    status = await session.scalar(select(Run.status).where(Run.id == run_id))
    return RunStatus(status) if status is not None else None


async def known_runs(session: AsyncSession, deployment_id: str, run_ids: Iterable[str]) -> set[str]:
    """Which of ``run_ids`` are runs of ``deployment_id``."""
    wanted = set(run_ids)
    if not wanted:
        return set()
    stmt = select(Run.id).where(Run.deployment_id == deployment_id, Run.id.in_(wanted))
    return set((await session.execute(stmt)).scalars())


async def require_runs(session: AsyncSession, deployment_id: str, run_ids: Iterable[str]) -> None:
    """Refuse the request unless every run exists in ``deployment_id``.

    Raises:
        BadInputError: naming the unknown runs.
    """
    wanted = set(run_ids)
    if not wanted:
        return
    found = set(
        (
            await session.execute(
                select(Run.id).where(Run.deployment_id == deployment_id, Run.id.in_(wanted))
            )
        ).scalars()
    )
    missing = sorted(wanted - found)
    if missing:
        raise BadInputError(f"unknown run id(s) in this deployment: {', '.join(missing)}")


async def store_events(
    session: AsyncSession, deployment_id: str, events: Sequence[RunEvent]
) -> tuple[int, int]:
    """Store worker events idempotently on ``(run_id, seq)`` (the statuses they imply are
    :func:`tether.controlplane.runs.lifecycle.store_events`'s to apply).

    Returns:
        (stored, duplicates).

    Raises:
        BadInputError: an event names a run that is not in ``deployment_id``.
    """
    await require_runs(session, deployment_id, (e.run_id for e in events))
    if session.get_bind().dialect.name == "postgresql":
        # The transaction id before the first event id: a run-status sensor's horizon
        # then sees this upload in flight for as long as it may still commit an id
        # (store.run_changes.EventHorizon).
        await session.execute(text("SELECT pg_current_xact_id()"))
    table = RunEventRow.__table__
    stored = 0
    ordered = sorted(events, key=lambda e: (e.run_id, e.seq))
    # One statement executed for many parameter sets: compiled once and sent in batches by
    # SQLAlchemy's "insertmanyvalues" (a multi-row VALUES built per call costs a bound
    # parameter object per cell, which dominated the control plane's CPU under load; the
    # batches also respect SQLite's cap on bound parameters per statement).
    stmt = (
        upsert_insert(session, table)
        .on_conflict_do_nothing(index_elements=["run_id", "seq"])
        .returning(table.c.run_id)
    )
    if ordered:
        inserted = Counter(
            run_id for (run_id,) in await session.execute(stmt, [_event_row(e) for e in ordered])
        )
        stored = sum(inserted.values())
        # Each run's stream counts only the rows really inserted (never a duplicate); its
        # last seq comes from any terminal event (a re-sent one names the same seq).
        ends: dict[str, int] = {}
        for ev in ordered:
            end = ev.stream_end
            if end is not None:
                ends[ev.run_id] = max(end, ends.get(ev.run_id, 0))
        await eventstreams.record_stored(session, inserted, ends)
        # An asset's history, in the same transaction as the events that record it.
        await assets.record_materializations(session, deployment_id, ordered)
    return stored, len(events) - stored


def _event_row(ev: RunEvent) -> dict[str, Any]:
    return {
        "run_id": ev.run_id,
        "seq": ev.seq,
        "event_type": str(ev.event_type),
        "timestamp": ev.timestamp,
        "step_key": ev.step_key,
        "message": ev.message,
        "data": ev.data,
        "error": ev.error.model_dump(mode="json") if ev.error else None,
    }


async def get_run(session: AsyncSession, deployment_id: str, run_id: str) -> Run | None:
    """A run of ``deployment_id`` by id."""
    return await session.scalar(
        select(Run).where(Run.deployment_id == deployment_id, Run.id == run_id)
    )


async def list_runs(
    session: AsyncSession,
    deployment_id: str,
    *,
    status: RunStatus | None = None,
    job_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
    limit: int = 50,
    offset: int = 0,
    before: tuple[float, str] | None = None,
) -> Sequence[Run]:
    """Runs of ``deployment_id``, newest first, filtered by every criterion given.

    ``tags``: runs carrying each of these tags with this value. ``created_after`` /
    ``created_before``: epoch seconds, exclusive bounds on the creation time. ``before``:
    only runs sorted after this ``(created_at, id)`` (the last of the previous page): a
    deep page is an index range read, where ``offset`` reads and drops every row before it.
    """
    stmt = select(Run).where(Run.deployment_id == deployment_id)
    if status is not None:
        stmt = stmt.where(Run.status == str(status))
    if job_name is not None:
        stmt = stmt.where(Run.job_name == job_name)
    for key, value in (tags or {}).items():
        stmt = stmt.where(
            exists().where(RunTag.run_id == Run.id, RunTag.key == key, RunTag.value == value)
        )
    if created_after is not None:
        stmt = stmt.where(Run.created_at > created_after)
    if created_before is not None:
        stmt = stmt.where(Run.created_at < created_before)
    if before is not None:
        stmt = stmt.where(tuple_(Run.created_at, Run.id) < tuple_(*before))
    stmt = stmt.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


async def succeeded_steps(session: AsyncSession, run_id: str) -> set[str]:
    """Keys of the steps of ``run_id`` that have a STEP_SUCCESS event."""
    rows = await session.scalars(
        select(RunEventRow.step_key)
        .where(
            RunEventRow.run_id == run_id,
            RunEventRow.event_type == str(EventType.STEP_SUCCESS),
            RunEventRow.step_key.is_not(None),
        )
        .distinct()
    )
    return {key for key in rows if key}


async def list_events(
    session: AsyncSession,
    run_id: str,
    *,
    after_id: int | None = None,
    after_seq: int | None = None,
    event_types: Iterable[EventType] | None = None,
    step_key: str | None = None,
    with_error: bool | None = None,
    limit: int | None = None,
    newest: bool = False,
) -> Sequence[RunEventRow]:
    """Events of a run matching every filter given, at most ``limit`` of them.

    The order: by ``(timestamp, id)``; by ``id`` (the order they were stored in) after
    ``after_id``, and by ``seq`` after ``after_seq`` (worker events only), so a reader
    paging on with the last id (or seq) it got never skips one. ``newest``: the last
    ``limit`` events of that order instead of the first (still returned in order).
    """
    stmt = select(RunEventRow).where(RunEventRow.run_id == run_id)
    order: list[Any] = [RunEventRow.timestamp, RunEventRow.id]
    if after_id is not None:
        stmt = stmt.where(RunEventRow.id > after_id)
        order = [RunEventRow.id]
    if after_seq is not None:
        stmt = stmt.where(RunEventRow.seq > after_seq)
        order = [RunEventRow.seq]
    if event_types is not None:
        stmt = stmt.where(RunEventRow.event_type.in_([str(t) for t in event_types]))
    if step_key is not None:
        stmt = stmt.where(RunEventRow.step_key == step_key)
    if with_error is not None:
        # A JSON column may hold JSON null as well as SQL NULL for "no error".
        has_error = and_(RunEventRow.error.is_not(None), cast(RunEventRow.error, Text) != "null")
        stmt = stmt.where(has_error if with_error else ~has_error)
    if newest:
        stmt = stmt.order_by(*(column.desc() for column in order))
    else:
        stmt = stmt.order_by(*order)
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = (await session.execute(stmt)).scalars().all()
    return list(reversed(rows)) if newest else rows


async def count_live_by_status(session: AsyncSession) -> dict[tuple[str, str], int]:
    """(deployment, status) -> how many runs have not ended (QUEUED, STARTING, STARTED,
    CANCELING), of every deployment (``ix_runs_status_changed`` leads with the status)."""
    live = [status for status in RunStatus if not status.is_terminal]
    rows = await session.execute(
        select(Run.deployment_id, Run.status, func.count())
        .where(Run.status.in_(live))
        .group_by(Run.deployment_id, Run.status)
    )
    return {(deployment, status): count for deployment, status, count in rows}


async def count_events(
    session: AsyncSession,
    run_id: str,
    *,
    event_types: Iterable[EventType] | None = None,
    step_key: str | None = None,
) -> int:
    """How many events of a run match the filters given."""
    stmt = select(func.count()).select_from(RunEventRow).where(RunEventRow.run_id == run_id)
    if event_types is not None:
        stmt = stmt.where(RunEventRow.event_type.in_([str(t) for t in event_types]))
    if step_key is not None:
        stmt = stmt.where(RunEventRow.step_key == step_key)
    return int(await session.scalar(stmt) or 0)


async def unchanged_since(
    session: AsyncSession, statuses: Iterable[RunStatus], before: float
) -> Sequence[tuple[str, str, str | None]]:
    """(id, deployment, traceparent) of the runs in ``statuses`` whose status last changed
    before ``before``, of every deployment."""
    rows = await session.execute(
        select(Run.id, Run.deployment_id, Run.traceparent).where(
            Run.status.in_([str(s) for s in statuses]), Run.status_changed_at < before
        )
    )
    return [(run_id, deployment_id, traceparent) for run_id, deployment_id, traceparent in rows]


async def unanswered_launches(
    session: AsyncSession, marker_suffix: str
) -> Sequence[tuple[str, str, str, float, float | None]]:
    """(run id, deployment, launch item status, item created at, marker created at) of
    the QUEUED runs whose ``launch_run`` item no result answered yet, of every deployment.

    The marker is the result row ``<launch item id><marker_suffix>`` (None: absent), which
    the run monitor writes when it offers the launch again.
    """
    item_id = launch_item_id("") + Run.id
    marker = WorkResultRow.__table__.alias("marker")
    rows = await session.execute(
        select(
            Run.id,
            Run.deployment_id,
            WorkItemRow.status,
            WorkItemRow.created_at,
            marker.c.created_at,
        )
        .join(WorkItemRow, WorkItemRow.id == item_id)
        .outerjoin(marker, marker.c.id == item_id + marker_suffix)
        .where(
            Run.status == str(RunStatus.QUEUED),
            WorkItemRow.status.in_([WorkStatus.PENDING, WorkStatus.CLAIMED, WorkStatus.DISPATCHED]),
        )
    )
    return [
        (run_id, deployment_id, status, created_at, marked_at)
        for run_id, deployment_id, status, created_at, marked_at in rows
    ]


async def reported_exits(
    session: AsyncSession, statuses: Iterable[RunStatus], before: float
) -> Sequence[tuple[str, str, float, dict[str, Any] | None]]:
    """(run id, deployment, reported at, payload) of the worker exits reported before
    ``before`` about runs still in ``statuses`` whose events have not been arriving since
    ``before`` either (a run whose stream is still being stored is not gone), of every
    deployment."""
    # The worker exit report is a result about the run's launch_run work item, whose id
    # is the run's: read from the (few) runs still going, never from every exit report
    # ever received (they grow with the history).
    rows = await session.execute(
        select(Run.id, Run.deployment_id, WorkResultRow.created_at, WorkResultRow.payload)
        .join(WorkResultRow, WorkResultRow.work_item_id == launch_item_id("") + Run.id)
        .outerjoin(RunEventStream, RunEventStream.run_id == Run.id)
        .where(
            WorkResultRow.kind == str(ReportKind.RUN_WORKER_EXITED),
            WorkResultRow.created_at < before,
            Run.status.in_([str(s) for s in statuses]),
            or_(RunEventStream.stored_at.is_(None), RunEventStream.stored_at < before),
        )
    )
    return [(run_id, dep, exited_at, payload) for run_id, dep, exited_at, payload in rows]


async def deployments_storing_events_since(
    session: AsyncSession, deployment_ids: Iterable[str], since: float
) -> set[str]:
    """Those of ``deployment_ids`` some of whose runs' events were stored after ``since``:
    their agents' event relays are delivering (maybe a backlog)."""
    wanted = sorted(set(deployment_ids))
    if not wanted:
        return set()
    rows = await session.execute(
        select(Run.deployment_id)
        .join(RunEventStream, RunEventStream.run_id == Run.id)
        .where(Run.deployment_id.in_(wanted), RunEventStream.stored_at > since)
        .distinct()
    )
    return {dep for (dep,) in rows}


def _launched() -> Any:
    # A run is launched once its launch item exists (its id is the prefix + the run id).
    return exists().where(WorkItemRow.id == launch_item_id("") + Run.id)


async def launched_unfinished_tags(session: AsyncSession) -> Sequence[tuple[str, dict[str, str]]]:
    """(deployment, tags) of every launched, unfinished run (the run coordinator's counts)."""
    unfinished = [str(s) for s in RunStatus if not s.is_terminal]
    rows = await session.execute(
        select(Run.deployment_id, Run.tags).where(Run.status.in_(unfinished), _launched())
    )
    return [(deployment_id, dict(tags or {})) for deployment_id, tags in rows]


async def waiting_for_launch(session: AsyncSession) -> Sequence[Run]:
    """QUEUED runs with no launch item yet, oldest first, of every deployment."""
    stmt = (
        select(Run)
        .where(Run.status == str(RunStatus.QUEUED), ~_launched())
        .order_by(Run.created_at, Run.id)
    )
    return (await session.execute(stmt)).scalars().all()

"""What schedule and sensor ticks have in common: recording them, and turning their
results into runs.

A tick is a row (``instigator_ticks``) STARTED together with its evaluation work item, in
one transaction. Its outcome is applied once that item's result is stored: the tick moves
out of STARTED by one conditional update, and only the process whose update matched
creates the runs, so two daemons (or a restart mid-way) never create a run twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError
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
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.launch import Launched, queue_run
from tether.controlplane.store.instigators import RUN_KEY_TAG
from tether.controlplane.workqueue import WorkQueue
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import RunRequestInfo, WorkKind

log = logging.getLogger(__name__)


async def start_tick(
    session: AsyncSession,
    queue: WorkQueue,
    state: Instigator,
    *,
    tick_time: float,
    kind: WorkKind,
    location: LocationConfig,
    payload: BaseModel,
    now: float,
    timeout_s: float,
) -> str | None:
    """Record a STARTED tick and queue its evaluation; None if that tick already exists.

    ``UNIQUE(instigator_id, tick_time)`` makes this the one place a tick can start: a
    second scheduler (or a restarted one) that computes the same cron tick inserts nothing.
    The work item expires with the tick's timeout, so an agent that comes back late never
    evaluates a tick this control plane already gave up on.
    """
    inserted = (
        await session.execute(
            upsert_insert(session, InstigatorTick.__table__)
            .values(
                instigator_id=state.id,
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
    if inserted is None:
        return None
    # Each tick is the root of a trace: its evaluation and the runs it creates join it.
    with telemetry.tracer("tether.controlplane").start_as_current_span(
        f"{state.kind}.tick",
        attributes={"instigator": state.name, "location": state.location_name},
    ):
        traceparent = telemetry.current_traceparent()
    item_id = queue.enqueue(
        session,
        deployment_id=state.deployment_id,
        kind=kind,
        location=location,
        payload=payload,
        traceparent=traceparent,
        expires_at=now + timeout_s,
    )
    await session.execute(
        update(InstigatorTick)
        .where(InstigatorTick.id == inserted)
        .values(work_item_id=item_id)
        .execution_options(synchronize_session=False)
    )
    return item_id


async def record_skipped_ticks(
    session: AsyncSession,
    state: Instigator,
    tick_times: Sequence[float],
    reasons: Sequence[str],
    now: float,
) -> None:
    """Record ticks that are not evaluated (missed during downtime) as SKIPPED.

    One multi-row insert; a tick already recorded (by another scheduler) stays as it was.
    """
    if not tick_times:
        return
    rows = [
        {
            "instigator_id": state.id,
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


@dataclass
class Outcome:
    """How a tick ended."""

    status: TickStatus
    run_ids: list[str] = field(default_factory=list)
    run_keys: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    error: ErrorInfo | None = None
    cursor: str | None = None


async def answered_ticks(
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


async def overdue_ticks(
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


async def claim_tick(session: AsyncSession, tick: InstigatorTick, now: float) -> bool:
    """Take the right to finish ``tick``: true for exactly one caller.

    On PostgreSQL the update locks the row, so a concurrent caller waits, then sees the
    tick no longer STARTED; SQLite has one writer at a time anyway.
    """
    result = await session.execute(
        update(InstigatorTick)
        .where(InstigatorTick.id == tick.id, InstigatorTick.status == str(TickStatus.STARTED))
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


async def finish_tick(
    session: AsyncSession, tick: InstigatorTick, outcome: Outcome, now: float
) -> None:
    """Write a claimed tick's outcome."""
    await session.execute(
        update(InstigatorTick)
        .where(InstigatorTick.id == tick.id)
        .values(
            status=str(outcome.status),
            run_ids=outcome.run_ids,
            run_keys=outcome.run_keys,
            skip_reason=outcome.skip_reason,
            error=outcome.error.model_dump(mode="json") if outcome.error else None,
            cursor=outcome.cursor,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def result_error(result: WorkResultRow) -> ErrorInfo:
    """The error a failed result carries (or a clear stand-in)."""
    if result.error:
        try:
            return ErrorInfo.model_validate(result.error)
        except ValidationError:
            pass
    return ErrorInfo(cls_name="UnknownError", message="the agent reported a failure without error")


async def _existing_run(
    session: AsyncSession, deployment_id: str, owner_tag: str, owner: str, run_key: str
) -> str | None:
    """A run this schedule/sensor already created for ``run_key``, if any."""
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


async def tick_traceparent(session: AsyncSession, tick: InstigatorTick) -> str | None:
    """The trace of ``tick`` (carried by its evaluation work item)."""
    if tick.work_item_id is None:
        return None
    return await session.scalar(
        select(WorkItemRow.traceparent).where(WorkItemRow.id == tick.work_item_id)
    )


async def create_runs(
    session: AsyncSession,
    queue: WorkQueue,
    state: Instigator,
    requests: Sequence[RunRequestInfo],
    *,
    owner_tag: str,
    traceparent: str | None,
    now: float,
) -> tuple[list[str], list[str], list[str]]:
    """Create a run per request, through the same validated path as ``launchRun``.

    A request whose ``run_key`` already has a run of this schedule/sensor is skipped
    (the idempotence a run key promises across re-evaluated ticks).

    Returns:
        (run ids created, run keys seen, problems of requests that made no run).
    """
    run_ids: list[str] = []
    run_keys: list[str] = []
    problems: list[str] = []
    for request in requests:
        tags = {**request.tags, owner_tag: state.name}
        if request.run_key is not None:
            run_keys.append(request.run_key)
            tags[RUN_KEY_TAG] = request.run_key
            existing = await _existing_run(
                session, state.deployment_id, owner_tag, state.name, request.run_key
            )
            if existing is not None:
                log.info(
                    "%s %s: run key %r already has run %s; skipped",
                    owner_tag,
                    state.name,
                    request.run_key,
                    existing,
                )
                continue
        if request.partition_key is not None:
            tags.setdefault("tether/partition", request.partition_key)
        outcome = await queue_run(
            session,
            queue,
            deployment_id=state.deployment_id,
            location_name=state.location_name,
            job_name=request.job_name,
            repository_name=state.repository_name or None,
            run_config=request.run_config,
            tags=tags,
            traceparent=traceparent,
            run_key=request.run_key,
            partition_key=request.partition_key,
            now=now,
        )
        if isinstance(outcome, Launched):
            run_ids.append(outcome.run.id)
        else:
            detail = getattr(outcome, "errors", None)
            problems.append(
                f"{request.job_name}: {outcome.message}"
                + (": " + "; ".join(detail) if detail else "")
            )
    return run_ids, run_keys, problems


def requests_failed(problems: list[str]) -> ErrorInfo:
    """The tick error when some run requests could not become runs."""
    return ErrorInfo(
        cls_name="InvalidRunRequest",
        message=f"{len(problems)} run request(s) made no run: " + " | ".join(problems),
    )

"""What schedule and sensor ticks have in common: recording them, turning their results
into runs, and finishing them.

A tick is a row (``instigator_ticks``) STARTED together with its evaluation work item, in
one transaction. Its outcome is applied once that item's result is stored: the tick moves
out of STARTED by one conditional update, and only the process whose update matched
creates the runs, so two daemons (or a restart mid-way) never create a run twice.
:func:`finish_ticks` is that one path, for schedules and sensors alike (a
:class:`TickKind` says what differs: the result model, the owner tag, the wording).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Instigator, InstigatorKind, TickStatus, WorkResultRow
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs.launch import Launched, queue_run
from tether.controlplane.store import ticks
from tether.controlplane.store.instigators import RUN_KEY_TAG, SCHEDULE_TAG, SENSOR_TAG
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import RunRequestInfo, ScheduleTickResult, SensorTickResult, WorkKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickKind:
    """What tells schedule ticks and sensor ticks apart when they finish."""

    instigator_kind: InstigatorKind
    result_model: type[ScheduleTickResult] | type[SensorTickResult]
    owner_tag: str
    #: How the timeout error names the tick.
    what: str


SCHEDULE_TICKS = TickKind(InstigatorKind.SCHEDULE, ScheduleTickResult, SCHEDULE_TAG, "tick")
SENSOR_TICKS = TickKind(InstigatorKind.SENSOR, SensorTickResult, SENSOR_TAG, "sensor tick")


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
    cursor: str | None = None,
) -> str | None:
    """Record a STARTED tick and queue its evaluation; None if that tick already exists.

    ``cursor``: the cursor the control plane itself chose for the sensor once this tick
    succeeds (a run-status sensor's); it is kept on the tick and replaces what the
    evaluation returns.

    ``UNIQUE(instigator_id, tick_time)`` makes this the one place a tick can start: a
    second scheduler (or a restarted one) that computes the same cron tick inserts nothing.
    The work item expires with the tick's timeout, so an agent that comes back late never
    evaluates a tick this control plane already gave up on.
    """
    inserted = await ticks.insert_started(session, state.id, tick_time, now)
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
    await ticks.set_work_item(session, inserted, item_id, cursor=cursor)
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
    if tick_times:
        await ticks.insert_skipped(session, state.id, tick_times, reasons, now)


@dataclass
class Outcome:
    """How a tick ended."""

    status: TickStatus
    run_ids: list[str] = field(default_factory=list)
    run_keys: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    error: ErrorInfo | None = None
    cursor: str | None = None


async def finish_ticks(
    db: Database, queue: WorkQueue, kind: TickKind, *, now: float, timeout_s: float
) -> int:
    """Apply the arrived results of ``kind``'s ticks and time out the silent ones (no
    result ``timeout_s`` after they started), in one transaction; return how many ticks
    finished.

    A sensor tick's new cursor is stored unless the tick failed (a failed tick keeps the
    old cursor, so the next tick retries the same work). A tick that started with a
    control-plane cursor (a run-status sensor's) stores that one, whatever came back.
    """
    finished = 0
    async with db.transaction() as session:
        for tick, state, result in await ticks.answered(session, kind.instigator_kind):
            if not await ticks.claim(session, tick.id, now):
                continue
            traceparent = await ticks.traceparent_of(session, tick)
            outcome = await _outcome(session, queue, kind, state, result, now, traceparent)
            if tick.cursor is not None and outcome.status != TickStatus.FAILURE:
                outcome.cursor = tick.cursor
            if outcome.cursor is not None and outcome.status != TickStatus.FAILURE:
                state.cursor = outcome.cursor
                state.updated_at = now
            await _finish(session, tick.id, outcome, now)
            finished += 1
        for tick, _state in await ticks.overdue(session, kind.instigator_kind, now - timeout_s):
            if not await ticks.claim(session, tick.id, now):
                continue
            error = ErrorInfo(
                cls_name="TickTimeout",
                message=(
                    f"no agent evaluated this {kind.what} within {timeout_s:g}s "
                    "(is an agent running for this location's substrate?)"
                ),
            )
            await _finish(session, tick.id, Outcome(TickStatus.FAILURE, error=error), now)
            finished += 1
    return finished


async def _finish(session: AsyncSession, tick_id: int, outcome: Outcome, now: float) -> None:
    await ticks.finish(
        session,
        tick_id,
        status=outcome.status,
        run_ids=outcome.run_ids,
        run_keys=outcome.run_keys,
        skip_reason=outcome.skip_reason,
        error=outcome.error,
        cursor=outcome.cursor,
        now=now,
    )


async def _outcome(
    session: AsyncSession,
    queue: WorkQueue,
    kind: TickKind,
    state: Instigator,
    result: WorkResultRow,
    now: float,
    traceparent: str | None,
) -> Outcome:
    try:
        tick = kind.result_model.model_validate(result.payload)
    except ValueError:
        # A failure before the code server answered (no location, no code server).
        return Outcome(TickStatus.FAILURE, error=result_error(result))
    if tick.error is not None:
        return Outcome(TickStatus.FAILURE, error=tick.error)
    cursor = tick.cursor if isinstance(tick, SensorTickResult) else None
    if not tick.run_requests:
        return Outcome(
            TickStatus.SKIPPED, skip_reason=tick.skip_reason or "no run requested", cursor=cursor
        )
    run_ids, run_keys, problems = await create_runs(
        session,
        queue,
        state,
        tick.run_requests,
        owner_tag=kind.owner_tag,
        traceparent=traceparent,
        now=now,
    )
    if problems:
        # A sensor's cursor is kept back: the next tick asks again, and run keys dedupe
        # the requests that did make runs.
        return Outcome(
            TickStatus.FAILURE,
            run_ids=run_ids,
            run_keys=run_keys,
            error=requests_failed(problems),
        )
    if not run_ids:
        return Outcome(
            TickStatus.SKIPPED,
            run_keys=run_keys,
            skip_reason="every run key of this tick already has a run",
            cursor=cursor,
        )
    return Outcome(TickStatus.SUCCESS, run_ids=run_ids, run_keys=run_keys, cursor=cursor)


def result_error(result: WorkResultRow) -> ErrorInfo:
    """The error a failed result carries (or a clear stand-in)."""
    if result.error:
        try:
            return ErrorInfo.model_validate(result.error)
        except ValidationError:
            pass
    return ErrorInfo(cls_name="UnknownError", message="the agent reported a failure without error")


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
            existing = await ticks.run_of_key(
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

"""GraphQL of schedules, sensors, partitions and backfills.

Definitions come from the locations' current snapshots; state (on/off, cursor, ticks)
from the daemons' tables. Reading never creates state: a schedule nobody started or
stopped shows its definition's default status.
"""

from __future__ import annotations

import time

import strawberry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.agentcalls import ask_agent
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.types import ErrorInfoType, RunStatusEnum
from tether.controlplane.daemons.catchup import CatchupPolicy
from tether.controlplane.daemons.scheduler import next_tick
from tether.controlplane.db.models import (
    Backfill,
    BackfillStatus,
    Instigator,
    InstigatorKind,
    InstigatorStatus,
    InstigatorTick,
    Run,
    TickStatus,
)
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.store import backfills, instigators, locations
from tether.controlplane.store.instigators import Definition
from tether.shared.runtime import telemetry
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import RunStatus
from tether.shared.wire.work import PartitionKeysPayload, PartitionKeysResult, WorkKind

InstigatorStatusEnum = strawberry.enum(
    InstigatorStatus, name="InstigatorStatus", description="Whether a schedule/sensor is on."
)

CatchupPolicyEnum = strawberry.enum(
    CatchupPolicy,
    name="CatchupPolicy",
    description=(
        "What a schedule does with ticks missed while the scheduler was down: LATEST runs "
        "only the newest, ALL the newest few (up to the schedule_max_catchup_ticks "
        "setting), NONE none; the others are recorded SKIPPED with the reason."
    ),
)

_RUNNING = InstigatorStatus.RUNNING
_STOPPED = InstigatorStatus.STOPPED

#: Longest a request waits for an agent to list partition keys.
MAX_AGENT_WAIT_S = 60.0

#: Most ticks or backfills one page holds.
MAX_PAGE = 500


def _check_page(limit: int, offset: int) -> None:
    if not 0 <= limit <= MAX_PAGE or offset < 0:
        raise BadInputError(f"limit must be within 0..{MAX_PAGE} and offset >= 0")


def _status_filter(status: str | None, allowed: type[TickStatus] | type[BackfillStatus]) -> None:
    if status is not None and status not in {str(s) for s in allowed}:
        raise BadInputError(
            f"unknown status {status!r}; use one of {', '.join(str(s) for s in allowed)}"
        )


@strawberry.type(name="Tick", description="One evaluation of a schedule or sensor.")
class TickType:
    """One evaluation of a schedule or sensor and its outcome."""

    id: str
    tick_time: float = strawberry.field(description="Cron tick (schedule) or evaluation time.")
    status: str = strawberry.field(description="STARTED, SUCCESS, SKIPPED or FAILURE.")
    run_ids: list[str]
    run_keys: list[str]
    skip_reason: str | None
    cursor: str | None
    error: ErrorInfoType | None

    @classmethod
    def build(cls, row: InstigatorTick) -> TickType:
        """Build from a row."""
        return cls(
            id=str(row.id),
            tick_time=row.tick_time,
            status=row.status,
            run_ids=list(row.run_ids or []),
            run_keys=list(row.run_keys or []),
            skip_reason=row.skip_reason,
            cursor=row.cursor,
            error=ErrorInfoType.from_json(row.error),
        )


async def _ticks(
    info: Info[ApiContext, None],
    state_id: int | None,
    limit: int,
    offset: int,
    status: str | None,
) -> list[TickType]:
    _check_page(limit, offset)
    _status_filter(status, TickStatus)
    if state_id is None:
        return []
    async with info.context.cp.db.reading() as session:
        rows = await instigators.list_ticks(
            session, state_id, limit=limit, offset=offset, status=status
        )
    return [TickType.build(r) for r in rows]


TICKS_DESCRIPTION = (
    "A page of its ticks, newest first (limit up to 500, offset >= 0; status: STARTED, "
    "SUCCESS, SKIPPED or FAILURE). Ask for limit + 1 to learn whether a next page exists."
)


@strawberry.type(name="Schedule", description="A cron schedule of a repository.")
class ScheduleType:
    """A schedule: its definition and state."""

    name: str
    location_name: str
    repository_name: str
    description: str
    cron_schedule: str
    execution_timezone: str
    job_names: list[str]
    status: InstigatorStatusEnum  # type: ignore[valid-type]
    default_status: InstigatorStatusEnum  # type: ignore[valid-type]
    next_tick_timestamp: float | None = strawberry.field(
        description="When it next fires (epoch seconds), if running."
    )
    catchup_policy: CatchupPolicyEnum = strawberry.field(  # type: ignore[valid-type]
        description="The catch-up policy it follows (its own, else the control plane's)."
    )
    own_catchup_policy: CatchupPolicyEnum | None = strawberry.field(  # type: ignore[valid-type]
        description="The policy set for this schedule by setScheduleCatchup (null: none)."
    )
    state_id: strawberry.Private[int | None]

    @strawberry.field(description=TICKS_DESCRIPTION)
    async def ticks(
        self,
        info: Info[ApiContext, None],
        limit: int = 20,
        offset: int = 0,
        status: str | None = None,
    ) -> list[TickType]:
        return await _ticks(info, self.state_id, limit, offset, status)


@strawberry.type(name="Sensor", description="A sensor of a repository.")
class SensorType:
    """A sensor: its definition and state."""

    name: str
    location_name: str
    repository_name: str
    description: str
    job_names: list[str]
    minimum_interval_seconds: int
    status: InstigatorStatusEnum  # type: ignore[valid-type]
    default_status: InstigatorStatusEnum  # type: ignore[valid-type]
    cursor: str | None
    next_tick_timestamp: float | None = strawberry.field(
        description="Earliest time of its next evaluation (epoch seconds), if running."
    )
    state_id: strawberry.Private[int | None]

    @strawberry.field(description=TICKS_DESCRIPTION)
    async def ticks(
        self,
        info: Info[ApiContext, None],
        limit: int = 20,
        offset: int = 0,
        status: str | None = None,
    ) -> list[TickType]:
        return await _ticks(info, self.state_id, limit, offset, status)


def _default_policy(info: Info[ApiContext, None]) -> CatchupPolicy:
    """The control plane's catch-up policy (schedules without their own follow it)."""
    return CatchupPolicy(info.context.cp.settings.schedule_catchup)


def _own_policy(state: Instigator | None) -> CatchupPolicy | None:
    try:
        return CatchupPolicy(state.catchup) if state and state.catchup else None
    except ValueError:
        return None


def _schedule(
    definition: Definition, state: Instigator | None, now: float, default: CatchupPolicy
) -> ScheduleType:
    schedule = definition.schedule
    assert schedule is not None
    status = InstigatorStatus(state.status if state else definition.default_status)
    own = _own_policy(state)
    after = max(now, state.last_tick_at or now) if state else now
    return ScheduleType(
        name=schedule.name,
        location_name=definition.location_name,
        repository_name=definition.repository_name,
        description=schedule.description,
        cron_schedule=schedule.cron_schedule,
        execution_timezone=schedule.execution_timezone,
        job_names=list(schedule.job_names),
        status=status,
        default_status=InstigatorStatus(definition.default_status),
        next_tick_timestamp=next_tick(schedule, after)
        if status == InstigatorStatus.RUNNING
        else None,
        catchup_policy=own or default,
        own_catchup_policy=own,
        state_id=state.id if state else None,
    )


def _sensor(definition: Definition, state: Instigator | None, now: float) -> SensorType:
    sensor = definition.sensor
    assert sensor is not None
    status = InstigatorStatus(state.status if state else definition.default_status)
    last = state.last_tick_at if state else None
    upcoming = max(now, last + sensor.minimum_interval_seconds) if last is not None else now
    return SensorType(
        name=sensor.name,
        location_name=definition.location_name,
        repository_name=definition.repository_name,
        description=sensor.description,
        job_names=list(sensor.job_names),
        minimum_interval_seconds=sensor.minimum_interval_seconds,
        status=status,
        default_status=InstigatorStatus(definition.default_status),
        cursor=state.cursor if state else None,
        next_tick_timestamp=upcoming if status == InstigatorStatus.RUNNING else None,
        state_id=state.id if state else None,
    )


async def _states(
    session: AsyncSession, deployment_id: str, kind: InstigatorKind
) -> dict[tuple[str, str, str], Instigator]:
    rows = (
        await session.execute(
            select(Instigator).where(
                Instigator.deployment_id == deployment_id, Instigator.kind == str(kind)
            )
        )
    ).scalars()
    return {(r.location_name, r.repository_name, r.name): r for r in rows}


async def _definitions(
    session: AsyncSession,
    deployment_id: str,
    kind: InstigatorKind,
    location_name: str | None,
    repository_name: str | None,
) -> list[tuple[Definition, Instigator | None]]:
    states = await _states(session, deployment_id, kind)
    out = []
    for definition in await instigators.all_definitions(session, kind, deployment_id):
        if location_name is not None and definition.location_name != location_name:
            continue
        if repository_name is not None and definition.repository_name != repository_name:
            continue
        key = (definition.location_name, definition.repository_name, definition.name)
        out.append((definition, states.get(key)))
    return out


async def _one(
    session: AsyncSession,
    deployment_id: str,
    kind: InstigatorKind,
    location_name: str,
    name: str,
    repository_name: str | None,
) -> Definition:
    found = [
        d
        for d, _ in await _definitions(session, deployment_id, kind, location_name, repository_name)
        if d.name == name
    ]
    if not found:
        raise NotFoundError(f"no {kind} named {name!r} in code location {location_name!r}")
    if len(found) > 1:
        raise BadInputError(f"{kind} {name!r} is in several repositories; name one")
    return found[0]


@strawberry.type(name="PartitionKeys", description="The partition keys of a partitioned job.")
class PartitionKeysType:
    """The keys of a job's partition set, as its code server computes them now."""

    partition_set_name: str
    keys: list[str]


@strawberry.type(name="BackfillPartition", description="One partition of a backfill.")
class BackfillPartitionType:
    """A partition of a backfill and its newest run, if created yet."""

    partition_key: str
    run_id: str | None = strawberry.field(description="Its newest run (a retry makes a new one).")
    run_status: RunStatusEnum | None  # type: ignore[valid-type]
    attempts: int = strawberry.field(description="How many runs this backfill made of it.")


@strawberry.type(name="Backfill", description="Runs of a job over a set of partitions.")
class BackfillType:
    """A backfill and the status of each of its partitions."""

    id: str
    location_name: str
    repository_name: str | None
    job_name: str
    partition_set_name: str | None
    status: str = strawberry.field(
        description=(
            "REQUESTED (creating runs), COMPLETED (every partition has a run), FAILED (a "
            "partition's config could not be made), or CANCELED (cancelBackfill)."
        )
    )
    launched: int = strawberry.field(description="How many partitions have a run so far.")
    runs_launched: int = strawberry.field(description="How many runs it created, retries included.")
    tags: JSON
    error: ErrorInfoType | None
    created_at: float
    retried_at: float | None = strawberry.field(description="When retryBackfill last ran.")
    partition_keys: list[str] = strawberry.field(description="Its partitions, in order.")
    row: strawberry.Private[Backfill]

    async def _runs(self, info: Info[ApiContext, None]) -> list[Run]:
        async with info.context.cp.db.reading() as session:
            return list(await backfills.backfill_runs(session, self.id))

    @strawberry.field(description="Each partition with its newest run's status, in order.")
    async def partitions(self, info: Info[ApiContext, None]) -> list[BackfillPartitionType]:
        runs = await self._runs(info)
        latest = backfills.latest_runs(runs)
        attempts: dict[str, int] = {}
        for run in runs:
            if run.partition_key is not None:
                attempts[run.partition_key] = attempts.get(run.partition_key, 0) + 1
        out = []
        for key in self.partition_keys:
            run = latest.get(key)
            out.append(
                BackfillPartitionType(
                    partition_key=key,
                    run_id=run.id if run else None,
                    run_status=RunStatus(run.status) if run else None,
                    attempts=attempts.get(key, 0),
                )
            )
        return out

    @strawberry.field(description="How many partitions' newest runs are in each status.")
    async def run_counts(self, info: Info[ApiContext, None]) -> JSON:
        counts: dict[str, int] = {}
        for run in backfills.latest_runs(await self._runs(info)).values():
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    @strawberry.field(
        description=(
            "The partitions retryBackfill would run again now: newest run FAILURE or "
            "CANCELED, or never launched because the backfill failed or was canceled first."
        )
    )
    async def retryable_partition_keys(self, info: Info[ApiContext, None]) -> list[str]:
        return backfills.retry_keys(self.row, await self._runs(info))

    @strawberry.field(description="How many of its runs have not finished yet.")
    async def unfinished_runs(self, info: Info[ApiContext, None]) -> int:
        latest = backfills.latest_runs(await self._runs(info))
        return sum(not RunStatus(r.status).is_terminal for r in latest.values())

    @classmethod
    def build(cls, row: Backfill) -> BackfillType:
        """Build from a row."""
        sequence = list(row.partition_keys)
        return cls(
            id=row.id,
            location_name=row.location_name,
            repository_name=row.repository_name,
            job_name=row.job_name,
            partition_set_name=row.partition_set_name,
            status=row.status,
            launched=len(backfills.distinct_keys(sequence[: row.launched])),
            runs_launched=row.launched,
            tags=row.tags,
            error=ErrorInfoType.from_json(row.error),
            created_at=row.created_at,
            retried_at=row.retried_at,
            partition_keys=backfills.distinct_keys(sequence),
            row=row,
        )


async def _partition_keys(
    info: Info[ApiContext, None],
    deployment_id: str,
    location_name: str,
    job_name: str,
    repository_name: str | None,
    timeout_s: float,
) -> tuple[str | None, str, PartitionKeysResult]:
    """(repository, partition set, keys) of a partitioned job, asked of its code server."""
    if not 0 < timeout_s <= MAX_AGENT_WAIT_S:
        raise BadInputError(f"timeoutSeconds must be within (0, {MAX_AGENT_WAIT_S:g}]")
    cp = info.context.cp
    async with cp.db.reading() as session:
        location = await locations.get_location(session, deployment_id, location_name)
        snapshot = await locations.load_snapshot(session, location) if location else None
    if location is None or snapshot is None:
        raise NotFoundError(f"code location {location_name!r} is missing or not loaded")
    jobs = [
        (repo.name, job)
        for repo in snapshot.repositories
        if repository_name in (None, repo.name)
        for job in repo.jobs
        if job.name == job_name
    ]
    if not jobs:
        raise NotFoundError(f"no job {job_name!r} in code location {location_name!r}")
    repo_name, job = jobs[0]
    if job.partition_set_name is None:
        raise BadInputError(f"job {job_name!r} is not partitioned")
    result = await ask_agent(
        cp.db,
        cp.queue,
        deployment_id=deployment_id,
        location=LocationConfig.model_validate(location.config),
        kind=WorkKind.GET_PARTITION_KEYS,
        payload=PartitionKeysPayload(
            repository_name=repo_name, partition_set_name=job.partition_set_name
        ).model_dump(mode="json"),
        timeout_s=timeout_s,
    )
    try:
        keys = PartitionKeysResult.model_validate(result.payload)
    except ValueError:
        message = (result.error or {}).get("message", "the agent reported no error")
        raise BadInputError(f"could not list the partitions of {job_name!r}: {message}") from None
    if keys.error is not None:
        raise BadInputError(
            f"the partitions of {job_name!r} raised {keys.error.cls_name}: {keys.error.message}"
        )
    return repo_name, job.partition_set_name, keys


@strawberry.type
class InstigationQuery:
    """Schedules, sensors, partitions and backfills."""

    @strawberry.field(description="Schedules of the loaded locations (optionally of one).")
    async def schedules(
        self,
        info: Info[ApiContext, None],
        location_name: str | None = None,
        repository_name: str | None = None,
    ) -> list[ScheduleType]:
        principal = await info.context.viewer()
        now = time.time()
        async with info.context.cp.db.reading() as session:
            found = await _definitions(
                session,
                principal.deployment_id,
                InstigatorKind.SCHEDULE,
                location_name,
                repository_name,
            )
        return [_schedule(d, s, now, _default_policy(info)) for d, s in found]

    @strawberry.field(description="Sensors of the loaded locations (optionally of one).")
    async def sensors(
        self,
        info: Info[ApiContext, None],
        location_name: str | None = None,
        repository_name: str | None = None,
    ) -> list[SensorType]:
        principal = await info.context.viewer()
        now = time.time()
        async with info.context.cp.db.reading() as session:
            found = await _definitions(
                session,
                principal.deployment_id,
                InstigatorKind.SENSOR,
                location_name,
                repository_name,
            )
        return [_sensor(d, s, now) for d, s in found]

    @strawberry.field(
        description=(
            "Partition keys of a partitioned job, computed by its code server now (waits up "
            "to timeoutSeconds for an agent; error AGENT_TIMEOUT otherwise)."
        )
    )
    async def partition_keys(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        job_name: str,
        repository_name: str | None = None,
        timeout_seconds: float = 15.0,
    ) -> PartitionKeysType:
        principal = await info.context.viewer()
        _, set_name, keys = await _partition_keys(
            info, principal.deployment_id, location_name, job_name, repository_name, timeout_seconds
        )
        return PartitionKeysType(partition_set_name=set_name, keys=keys.partition_keys)

    @strawberry.field(
        description=(
            "A page of backfills, newest first (limit up to 500, offset >= 0; status: "
            "REQUESTED, COMPLETED, FAILED or CANCELED). Ask for limit + 1 to learn whether "
            "a next page exists."
        )
    )
    async def backfills(
        self,
        info: Info[ApiContext, None],
        limit: int = 50,
        offset: int = 0,
        status: str | None = None,
    ) -> list[BackfillType]:
        _check_page(limit, offset)
        _status_filter(status, BackfillStatus)
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await backfills.list_backfills(
                session,
                principal.deployment_id,
                limit=limit,
                offset=offset,
                status=BackfillStatus(status) if status is not None else None,
            )
        return [BackfillType.build(r) for r in rows]

    @strawberry.field(description="One backfill, with the status of each partition's run.")
    async def backfill(self, info: Info[ApiContext, None], id: str) -> BackfillType | None:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            row = await backfills.get_backfill(session, principal.deployment_id, id)
        return BackfillType.build(row) if row else None


async def _set_status(
    info: Info[ApiContext, None],
    kind: InstigatorKind,
    location_name: str,
    name: str,
    repository_name: str | None,
    status: InstigatorStatus,
) -> tuple[Definition, Instigator]:
    principal = await info.context.launcher()
    now = time.time()
    async with info.context.cp.db.transaction() as session:
        definition = await _one(
            session, principal.deployment_id, kind, location_name, name, repository_name
        )
        state = await instigators.set_status(session, definition, status, now)
    return definition, state


@strawberry.type
class InstigationMutation:
    """Turning schedules and sensors on and off; launching backfills."""

    @strawberry.mutation(description="Turn a schedule on (missed ticks are not caught up).")
    async def start_schedule(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        repository_name: str | None = None,
    ) -> ScheduleType:
        d, s = await _set_status(
            info,
            InstigatorKind.SCHEDULE,
            location_name,
            name,
            repository_name,
            InstigatorStatus.RUNNING,
        )
        return _schedule(d, s, time.time(), _default_policy(info))

    @strawberry.mutation(description="Turn a schedule off.")
    async def stop_schedule(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        repository_name: str | None = None,
    ) -> ScheduleType:
        d, s = await _set_status(
            info,
            InstigatorKind.SCHEDULE,
            location_name,
            name,
            repository_name,
            InstigatorStatus.STOPPED,
        )
        return _schedule(d, s, time.time(), _default_policy(info))

    @strawberry.mutation(
        description=(
            "Give a schedule its own catch-up policy for ticks missed while the scheduler "
            "was down (policy null: follow the control plane's setting again)."
        )
    )
    async def set_schedule_catchup(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        policy: CatchupPolicyEnum | None,  # type: ignore[valid-type]
        repository_name: str | None = None,
    ) -> ScheduleType:
        principal = await info.context.launcher()
        now = time.time()
        async with info.context.cp.db.transaction() as session:
            definition = await _one(
                session,
                principal.deployment_id,
                InstigatorKind.SCHEDULE,
                location_name,
                name,
                repository_name,
            )
            value = str(CatchupPolicy(policy)) if policy is not None else None
            state = await instigators.set_catchup(session, definition, value, now)
        return _schedule(definition, state, now, _default_policy(info))

    @strawberry.mutation(description="Turn a sensor on (it ticks at once if its interval passed).")
    async def start_sensor(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        repository_name: str | None = None,
    ) -> SensorType:
        d, s = await _set_status(
            info,
            InstigatorKind.SENSOR,
            location_name,
            name,
            repository_name,
            InstigatorStatus.RUNNING,
        )
        return _sensor(d, s, time.time())

    @strawberry.mutation(description="Turn a sensor off (its cursor is kept).")
    async def stop_sensor(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        repository_name: str | None = None,
    ) -> SensorType:
        d, s = await _set_status(
            info,
            InstigatorKind.SENSOR,
            location_name,
            name,
            repository_name,
            InstigatorStatus.STOPPED,
        )
        return _sensor(d, s, time.time())

    @strawberry.mutation(
        description=(
            "Launch one run per partition of a partitioned job: the given partitionKeys, or "
            "the keys from fromKey to toKey inclusive (in the job's partition order; either "
            "end open). Runs are created by the backfill daemon, a bounded number in flight."
        )
    )
    async def launch_backfill(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        job_name: str,
        repository_name: str | None = None,
        partition_keys: list[str] | None = None,
        from_key: str | None = None,
        to_key: str | None = None,
        tags: JSON | None = None,
        timeout_seconds: float = 15.0,
    ) -> BackfillType:
        principal = await info.context.launcher()
        if tags is not None and not (
            isinstance(tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise BadInputError("tags must be a JSON object of string values")
        if partition_keys is not None and (from_key is not None or to_key is not None):
            raise BadInputError("give partitionKeys or a fromKey/toKey range, not both")
        repo_name, set_name, known = await _partition_keys(
            info,
            principal.deployment_id,
            location_name,
            job_name,
            repository_name,
            timeout_seconds,
        )
        selected = _select(known.partition_keys, partition_keys, from_key, to_key)
        async with info.context.cp.db.transaction() as session:
            row = await backfills.create_backfill(
                session,
                deployment_id=principal.deployment_id,
                location_name=location_name,
                repository_name=repo_name,
                job_name=job_name,
                partition_set_name=set_name,
                partition_keys=selected,
                tags=tags,
                now=time.time(),
            )
            built = BackfillType.build(row)
        return built

    @strawberry.mutation(
        description=(
            "Cancel a backfill: it launches no more partitions and its QUEUED runs are "
            "canceled; with terminateRunning its started runs are terminated too (else they "
            "run to their end). Refused (BAD_INPUT) when it already ended with no run left "
            "unfinished."
        )
    )
    async def cancel_backfill(
        self, info: Info[ApiContext, None], id: str, terminate_running: bool = False
    ) -> BackfillType:
        principal = await info.context.launcher()
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "cancelBackfill", context=info.context.trace_context(), attributes={"backfill": id}
        ):
            row, _ = await backfills.cancel_backfill(
                info.context.cp.db,
                info.context.cp.queue,
                deployment_id=principal.deployment_id,
                backfill_id=id,
                terminate_running=terminate_running,
                now=time.time(),
            )
        return BackfillType.build(row)

    @strawberry.mutation(
        description=(
            "Retry a finished, failed or canceled backfill: new runs only for the partitions "
            "whose newest run FAILED or was CANCELED, and those never launched "
            "(retryablePartitionKeys); the backfill is REQUESTED again. Refused (BAD_INPUT) "
            "while it is REQUESTED or when there is nothing to retry."
        )
    )
    async def retry_backfill(self, info: Info[ApiContext, None], id: str) -> BackfillType:
        principal = await info.context.launcher()
        async with info.context.cp.db.transaction() as session:
            row, _ = await backfills.retry_backfill(
                session, principal.deployment_id, id, now=time.time()
            )
            built = BackfillType.build(row)
        return built


def _select(
    known: list[str], wanted: list[str] | None, from_key: str | None, to_key: str | None
) -> list[str]:
    """The keys a backfill covers, in partition order; a clear error for unknown ones."""
    if wanted is not None:
        unknown = [k for k in wanted if k not in known]
        if unknown:
            raise BadInputError(f"unknown partition key(s): {', '.join(unknown)}")
        chosen = set(wanted)
        selected = [k for k in known if k in chosen]
    else:
        for end in (from_key, to_key):
            if end is not None and end not in known:
                raise BadInputError(f"unknown partition key {end!r}")
        start = known.index(from_key) if from_key is not None else 0
        stop = known.index(to_key) + 1 if to_key is not None else len(known)
        selected = known[start:stop]
    if not selected:
        raise BadInputError("the backfill covers no partition")
    return selected


__all__ = ["InstigationMutation", "InstigationQuery"]

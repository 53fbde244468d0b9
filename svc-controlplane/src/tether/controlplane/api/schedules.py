"""GraphQL of schedules: list them, turn them on and off, set their catch-up policy."""

from __future__ import annotations

import time

import strawberry
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.instigators import (
    TICKS_DESCRIPTION,
    InstigatorStatusEnum,
    TickType,
    set_status,
    ticks_page,
)
from tether.controlplane.daemons.catchup import CatchupPolicy
from tether.controlplane.daemons.scheduler import next_tick
from tether.controlplane.db.models import Instigator, InstigatorKind, InstigatorStatus
from tether.controlplane.store import deployment_settings, instigator_states, instigators
from tether.controlplane.store.deployment_settings import DeploymentDefaults
from tether.controlplane.store.instigators import Definition
from tether.shared.wire.snapshots import ScheduleOverlapPolicy

ScheduleOverlapPolicyEnum = strawberry.enum(
    ScheduleOverlapPolicy,
    name="ScheduleOverlapPolicy",
    description=(
        "What a tick does while a run of the schedule is still going: ALLOW starts it "
        "anyway, SKIP records it SKIPPED naming that run."
    ),
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
    overlap_policy: ScheduleOverlapPolicyEnum = strawberry.field(  # type: ignore[valid-type]
        description="Its overlap policy, as its definition declares it."
    )
    state_id: strawberry.Private[int | None]

    @strawberry.field(description=TICKS_DESCRIPTION)
    async def ticks(
        self,
        info: Info[ApiContext, None],
        limit: int = 20,
        offset: int = 0,
        status: str | None = None,
        after: str | None = None,
    ) -> list[TickType]:
        return await ticks_page(info, self.state_id, limit, offset, status, after)


async def _default_policy(info: Info[ApiContext, None], deployment_id: str) -> CatchupPolicy:
    """The catch-up policy schedules without their own follow: their deployment's
    ``schedule_catchup`` setting, else the control plane's."""
    defaults = DeploymentDefaults.from_settings(info.context.cp.settings)
    async with info.context.cp.db.reading() as session:
        found = await deployment_settings.effective(session, deployment_id, defaults)
    return CatchupPolicy(found.schedule_catchup)


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
        overlap_policy=schedule.overlap_policy,
        state_id=state.id if state else None,
    )


@strawberry.type
class ScheduleQuery:
    """Schedules of the loaded locations."""

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
            found = await instigator_states.definitions_with_states(
                session,
                principal.deployment_id,
                InstigatorKind.SCHEDULE,
                location_name,
                repository_name,
            )
        default = await _default_policy(info, principal.deployment_id)
        return [_schedule(d, s, now, default) for d, s in found]


@strawberry.type
class ScheduleMutation:
    """Turning schedules on and off; their catch-up policy."""

    @strawberry.mutation(description="Turn a schedule on (missed ticks are not caught up).")
    async def start_schedule(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        repository_name: str | None = None,
    ) -> ScheduleType:
        d, s = await set_status(
            info,
            InstigatorKind.SCHEDULE,
            location_name,
            name,
            repository_name,
            InstigatorStatus.RUNNING,
        )
        return _schedule(d, s, time.time(), await _default_policy(info, d.deployment_id))

    @strawberry.mutation(description="Turn a schedule off.")
    async def stop_schedule(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        repository_name: str | None = None,
    ) -> ScheduleType:
        d, s = await set_status(
            info,
            InstigatorKind.SCHEDULE,
            location_name,
            name,
            repository_name,
            InstigatorStatus.STOPPED,
        )
        return _schedule(d, s, time.time(), await _default_policy(info, d.deployment_id))

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
            definition = await instigator_states.find_definition(
                session,
                principal.deployment_id,
                InstigatorKind.SCHEDULE,
                location_name,
                name,
                repository_name,
            )
            value = str(CatchupPolicy(policy)) if policy is not None else None
            state = await instigators.set_catchup(session, definition, value, now)
        default = await _default_policy(info, definition.deployment_id)
        return _schedule(definition, state, now, default)

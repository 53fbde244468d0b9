"""GraphQL of sensors: list them, turn them on and off."""

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
from tether.controlplane.db.models import Instigator, InstigatorKind, InstigatorStatus
from tether.controlplane.store import instigator_states
from tether.controlplane.store.instigators import Definition


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
    run_statuses: list[str] = strawberry.field(
        description="For a run-status sensor: the run statuses it reacts to (its cursor is "
        "then an event id the control plane keeps); empty: a plain sensor."
    )
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
        after: str | None = None,
    ) -> list[TickType]:
        return await ticks_page(info, self.state_id, limit, offset, status, after)


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
        run_statuses=[str(s) for s in sensor.run_status.statuses] if sensor.run_status else [],
        next_tick_timestamp=upcoming if status == InstigatorStatus.RUNNING else None,
        state_id=state.id if state else None,
    )


@strawberry.type
class SensorQuery:
    """Sensors of the loaded locations."""

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
            found = await instigator_states.definitions_with_states(
                session,
                principal.deployment_id,
                InstigatorKind.SENSOR,
                location_name,
                repository_name,
            )
        return [_sensor(d, s, now) for d, s in found]


@strawberry.type
class SensorMutation:
    """Turning sensors on and off."""

    @strawberry.mutation(description="Turn a sensor on (it ticks at once if its interval passed).")
    async def start_sensor(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        name: str,
        repository_name: str | None = None,
    ) -> SensorType:
        d, s = await set_status(
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
        d, s = await set_status(
            info,
            InstigatorKind.SENSOR,
            location_name,
            name,
            repository_name,
            InstigatorStatus.STOPPED,
        )
        return _sensor(d, s, time.time())

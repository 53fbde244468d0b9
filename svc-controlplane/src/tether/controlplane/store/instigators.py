"""Schedules and sensors: their on/off state, cursors and ticks, next to their definitions.

Definitions come from the location snapshots; state rows (``instigators``) are created the
first time a daemon or a user looks at a schedule or sensor, with the definition's default
status, and from then on only a user (start/stop) changes that status.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import (
    CodeLocation,
    Deployment,
    Instigator,
    InstigatorKind,
    InstigatorStatus,
    InstigatorTick,
)
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.store import locations
from tether.shared.wire.snapshots import LocationSnapshot, ScheduleSnapshot, SensorSnapshot

#: Tag every run a schedule or sensor creates carries (value: its name).
SCHEDULE_TAG = "tether/schedule"
SENSOR_TAG = "tether/sensor"
RUN_KEY_TAG = "tether/run_key"


@dataclass(frozen=True)
class Definition:
    """A schedule or sensor as the current snapshot of its location defines it."""

    deployment_id: str
    location_name: str
    repository_name: str
    kind: InstigatorKind
    schedule: ScheduleSnapshot | None = None
    sensor: SensorSnapshot | None = None

    @property
    def name(self) -> str:
        """The schedule's or sensor's name."""
        spec = self.schedule or self.sensor
        assert spec is not None
        return spec.name

    @property
    def default_status(self) -> str:
        """RUNNING or STOPPED, as the definition says."""
        spec = self.schedule or self.sensor
        assert spec is not None
        return str(spec.default_status)


def definitions_of(
    deployment_id: str, snapshot: LocationSnapshot, kind: InstigatorKind | None = None
) -> Iterator[Definition]:
    """Every schedule and/or sensor a location snapshot defines."""
    for repo in snapshot.repositories:
        if kind in (None, InstigatorKind.SCHEDULE):
            for schedule in repo.schedules:
                yield Definition(
                    deployment_id,
                    snapshot.location_name,
                    repo.name,
                    InstigatorKind.SCHEDULE,
                    schedule=schedule,
                )
        if kind in (None, InstigatorKind.SENSOR):
            for sensor in repo.sensors:
                yield Definition(
                    deployment_id,
                    snapshot.location_name,
                    repo.name,
                    InstigatorKind.SENSOR,
                    sensor=sensor,
                )


async def loaded_snapshots(
    session: AsyncSession, deployment_id: str | None = None
) -> list[tuple[CodeLocation, LocationSnapshot]]:
    """Every location (of ``deployment_id``, or of all live deployments) that has
    definitions (a deleted deployment's schedules and sensors never tick)."""
    stmt = select(CodeLocation).where(CodeLocation.snapshot_id.is_not(None))
    if deployment_id is not None:
        stmt = stmt.where(CodeLocation.deployment_id == deployment_id)
    else:
        live = select(Deployment.id).where(Deployment.deleted_at.is_(None))
        stmt = stmt.where(CodeLocation.deployment_id.in_(live))
    out = []
    for location in (await session.execute(stmt.order_by(CodeLocation.name))).scalars().all():
        snapshot = await locations.load_snapshot(session, location)
        if snapshot is not None:
            out.append((location, snapshot))
    return out


async def all_definitions(
    session: AsyncSession, kind: InstigatorKind, deployment_id: str | None = None
) -> list[Definition]:
    """Every schedule or sensor of the loaded locations (of one or all deployments)."""
    return [
        definition
        for location, snapshot in await loaded_snapshots(session, deployment_id)
        for definition in definitions_of(location.deployment_id, snapshot, kind)
    ]


async def ensure_state(session: AsyncSession, definition: Definition, now: float) -> Instigator:
    """The state row of ``definition``, created with its default status when missing.

    A new schedule's ``last_tick_at`` is ``now``: a schedule seen for the first time
    starts ticking from now on, never catching up on its past. A new sensor has none, so
    its first tick is due at once.
    """
    first_tick = now if definition.kind == InstigatorKind.SCHEDULE else None
    stmt = (
        upsert_insert(session, Instigator.__table__)
        .values(
            deployment_id=definition.deployment_id,
            kind=str(definition.kind),
            location_name=definition.location_name,
            repository_name=definition.repository_name,
            name=definition.name,
            status=definition.default_status,
            last_tick_at=first_tick,
            updated_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=["deployment_id", "kind", "location_name", "repository_name", "name"]
        )
    )
    await session.execute(stmt)
    state = await session.scalar(
        select(Instigator).where(
            Instigator.deployment_id == definition.deployment_id,
            Instigator.kind == str(definition.kind),
            Instigator.location_name == definition.location_name,
            Instigator.repository_name == definition.repository_name,
            Instigator.name == definition.name,
        )
    )
    assert state is not None
    return state


async def set_status(
    session: AsyncSession, definition: Definition, status: InstigatorStatus, now: float
) -> Instigator:
    """Turn a schedule or sensor on or off.

    Turning a schedule on resets ``last_tick_at`` to ``now``: ticks missed while it was
    off are not caught up (only downtime of the scheduler itself is). A sensor turned on
    ticks at once if its interval has passed.
    """
    state = await ensure_state(session, definition, now)
    if state.status != status:
        values: dict[str, object] = {"status": str(status), "updated_at": now}
        if status == InstigatorStatus.RUNNING and definition.kind == InstigatorKind.SCHEDULE:
            values["last_tick_at"] = now
        await session.execute(
            update(Instigator)
            .where(Instigator.id == state.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        await session.refresh(state)
    return state


async def set_catchup(
    session: AsyncSession, definition: Definition, policy: str | None, now: float
) -> Instigator:
    """Give a schedule its own catch-up policy (None: follow the control plane's setting)."""
    state = await ensure_state(session, definition, now)
    await session.execute(
        update(Instigator)
        .where(Instigator.id == state.id)
        .values(catchup=policy, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(state)
    return state


async def list_ticks(
    session: AsyncSession,
    instigator_id: int,
    *,
    limit: int = 20,
    offset: int = 0,
    status: str | None = None,
    before: float | None = None,
) -> Sequence[InstigatorTick]:
    """A page of the ticks of a schedule or sensor (optionally of one status), newest first;
    ``before``: only those of an earlier tick time (a keyset page)."""
    stmt = select(InstigatorTick).where(InstigatorTick.instigator_id == instigator_id)
    if status is not None:
        stmt = stmt.where(InstigatorTick.status == status)
    if before is not None:
        stmt = stmt.where(InstigatorTick.tick_time < before)
    # tick_time is unique per instigator: a stable order, so pages never overlap.
    stmt = stmt.order_by(InstigatorTick.tick_time.desc()).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()

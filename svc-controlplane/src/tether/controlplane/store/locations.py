"""Code locations, their content-addressed snapshots, and what the workspace file seeded."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import (
    CodeLocation,
    Instigator,
    InstigatorKind,
    LoadStatus,
    LocationSeed,
    LocationSnapshotRow,
    WorkItemRow,
    WorkStatus,
)
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.errors import AlreadyExistsError, NotFoundError
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.snapshots import LocationSnapshot
from tether.shared.wire.work import WorkKind


def snapshot_id(snapshot: LocationSnapshot) -> str:
    """SHA-256 of the snapshot's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(
        snapshot.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def store_snapshot(session: AsyncSession, snapshot: LocationSnapshot) -> str:
    """Store ``snapshot`` under its content hash (a no-op if stored before); return the hash."""
    digest = snapshot_id(snapshot)
    stmt = (
        upsert_insert(session, LocationSnapshotRow.__table__)
        .values(
            id=digest,
            location_name=snapshot.location_name,
            body=snapshot.model_dump(mode="json"),
            created_at=time.time(),
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    await session.execute(stmt)
    return digest


async def upsert_location(
    session: AsyncSession, deployment_id: str, config: LocationConfig
) -> CodeLocation:
    """Create or update the location named ``config.name``; return its row."""
    location = await get_location(session, deployment_id, config.name)
    if location is None:
        location = CodeLocation(
            deployment_id=deployment_id,
            name=config.name,
            config=config.model_dump(mode="json"),
            load_status=LoadStatus.NOT_LOADED,
            updated_at=time.time(),
        )
        session.add(location)
        await session.flush()
    else:
        location.config = config.model_dump(mode="json")
        location.updated_at = time.time()
    return location


async def add_location(
    session: AsyncSession, deployment_id: str, config: LocationConfig
) -> CodeLocation:
    """Create the location named ``config.name``.

    Raises:
        AlreadyExistsError: a location of that name exists.
    """
    if await get_location(session, deployment_id, config.name) is not None:
        raise AlreadyExistsError(
            f"a code location named {config.name!r} exists; use updateLocation to change it"
        )
    return await upsert_location(session, deployment_id, config)


async def update_location(
    session: AsyncSession, deployment_id: str, config: LocationConfig
) -> CodeLocation:
    """Replace the config of the location named ``config.name``.

    Raises:
        NotFoundError: no such location.
    """
    if await get_location(session, deployment_id, config.name) is None:
        raise NotFoundError(f"no code location named {config.name!r}; use addLocation")
    return await upsert_location(session, deployment_id, config)


async def delete_location(session: AsyncSession, location: CodeLocation) -> None:
    """Delete ``location``'s row; its schedules forget their last tick.

    If the location comes back, its schedules start from then, rather than taking the time
    it was gone for scheduler downtime to catch up on. Runs keep their history (they name
    the location, no foreign key).
    """
    await session.execute(
        update(Instigator)
        .where(
            Instigator.deployment_id == location.deployment_id,
            Instigator.location_name == location.name,
            Instigator.kind == str(InstigatorKind.SCHEDULE),
        )
        .values(last_tick_at=None)
        .execution_options(synchronize_session=False)
    )
    await session.delete(location)
    await session.flush()


async def get_location(session: AsyncSession, deployment_id: str, name: str) -> CodeLocation | None:
    """The location of ``deployment_id`` named ``name``."""
    return await session.scalar(
        select(CodeLocation).where(
            CodeLocation.deployment_id == deployment_id, CodeLocation.name == name
        )
    )


async def list_locations(session: AsyncSession, deployment_id: str) -> Sequence[CodeLocation]:
    """Every location of ``deployment_id``, by name."""
    stmt = (
        select(CodeLocation)
        .where(CodeLocation.deployment_id == deployment_id)
        .order_by(CodeLocation.name)
    )
    return (await session.execute(stmt)).scalars().all()


async def load_snapshot(session: AsyncSession, location: CodeLocation) -> LocationSnapshot | None:
    """The last snapshot loaded for ``location``, if any."""
    if location.snapshot_id is None:
        return None
    body = await session.scalar(
        select(LocationSnapshotRow.body).where(LocationSnapshotRow.id == location.snapshot_id)
    )
    return LocationSnapshot.model_validate(body) if body is not None else None


async def mark_loaded(
    session: AsyncSession, deployment_id: str, name: str, snapshot: LocationSnapshot
) -> None:
    """Store ``snapshot`` and make it the current definitions of location ``name``."""
    digest = await store_snapshot(session, snapshot)
    location = await get_location(session, deployment_id, name)
    if location is not None:
        location.snapshot_id = digest
        location.load_status = LoadStatus.LOADED
        location.load_error = None
        location.updated_at = time.time()


async def mark_load_error(
    session: AsyncSession, deployment_id: str, name: str, error: ErrorInfo | None
) -> None:
    """Record that loading location ``name`` failed (its last good snapshot is kept)."""
    location = await get_location(session, deployment_id, name)
    if location is not None:
        location.load_status = LoadStatus.LOAD_ERROR
        location.load_error = (
            error or ErrorInfo(cls_name="UnknownError", message="the agent reported no error")
        ).model_dump(mode="json")
        location.updated_at = time.time()


def config_sha(config: LocationConfig) -> str:
    """SHA-256 of a location config's canonical JSON (how a workspace entry is compared)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class SeedOutcome:
    """What :func:`seed_locations` did with each workspace entry (location names)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    locations: list[CodeLocation] = field(default_factory=list)


async def seed_locations(
    session: AsyncSession, deployment_id: str, configs: Sequence[LocationConfig], now: float
) -> SeedOutcome:
    """Apply a workspace file's entries, each only when it is new or was edited in the file.

    The file seeds locations; the API owns them afterwards. Per entry:

    - first time the file lists it: the location is created, unless one of that name
      exists already (added through the API, or by a control plane before seeds were
      recorded), which is kept as it is;
    - listed before with the same config: nothing changes, so a location the API updated
      keeps the API's config and one the API removed stays removed;
    - listed before with another config (the entry was edited in the file): the file's
      config is applied, creating the location again if it had been removed, since the
      edit is newer than whatever the API did.

    Entries dropped from the file are forgotten (their locations stay), so listing the
    name again later seeds it anew.

    Returns:
        What happened to each entry, and the rows of the entries' existing locations.
    """
    outcome = SeedOutcome()
    seeds = {
        seed.name: seed
        for seed in (
            await session.execute(
                select(LocationSeed).where(LocationSeed.deployment_id == deployment_id)
            )
        ).scalars()
    }
    for config in configs:
        digest = config_sha(config)
        seed = seeds.get(config.name)
        location = await get_location(session, deployment_id, config.name)
        if seed is None:
            session.add(
                LocationSeed(
                    deployment_id=deployment_id, name=config.name, config_sha=digest, seeded_at=now
                )
            )
            if location is None:
                location = await upsert_location(session, deployment_id, config)
                outcome.created.append(config.name)
            else:
                outcome.kept.append(config.name)
        elif seed.config_sha != digest:
            seed.config_sha = digest
            seed.seeded_at = now
            (outcome.updated if location is not None else outcome.created).append(config.name)
            location = await upsert_location(session, deployment_id, config)
        elif location is None:
            outcome.removed.append(config.name)
        else:
            outcome.kept.append(config.name)
        if location is not None:
            outcome.locations.append(location)
    listed = [c.name for c in configs]
    await session.execute(
        delete(LocationSeed)
        .where(LocationSeed.deployment_id == deployment_id, LocationSeed.name.not_in(listed))
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return outcome


async def loads_in_flight(
    session: AsyncSession, deployment_id: str, names: Sequence[str], *, since: float
) -> set[str]:
    """Which of locations ``names`` have a ``load_location`` item still waiting for an agent
    (PENDING or CLAIMED) or created at ``since`` or later."""
    if not names:
        return set()
    waiting = [str(WorkStatus.PENDING), str(WorkStatus.CLAIMED)]
    rows = await session.execute(
        select(WorkItemRow.location_name)
        .where(
            WorkItemRow.deployment_id == deployment_id,
            WorkItemRow.kind == str(WorkKind.LOAD_LOCATION),
            WorkItemRow.location_name.in_(list(names)),
            or_(WorkItemRow.status.in_(waiting), WorkItemRow.created_at >= since),
        )
        .distinct()
    )
    return set(rows.scalars())

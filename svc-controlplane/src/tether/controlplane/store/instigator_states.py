"""Schedules' and sensors' definitions (from the locations' snapshots) with their state
(from the daemons' tables), as the API lists and finds them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import Instigator, InstigatorKind
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.store import instigators
from tether.controlplane.store.instigators import Definition


async def states_by_key(
    session: AsyncSession, deployment_id: str, kind: InstigatorKind
) -> dict[tuple[str, str, str], Instigator]:
    """The deployment's stored states of ``kind``, by (location, repository, name)."""
    rows = (
        await session.execute(
            select(Instigator).where(
                Instigator.deployment_id == deployment_id, Instigator.kind == str(kind)
            )
        )
    ).scalars()
    return {(r.location_name, r.repository_name, r.name): r for r in rows}


async def definitions_with_states(
    session: AsyncSession,
    deployment_id: str,
    kind: InstigatorKind,
    location_name: str | None,
    repository_name: str | None,
) -> list[tuple[Definition, Instigator | None]]:
    """Every definition of ``kind`` (optionally of one location or repository) with its
    state, None where nobody started or stopped it yet."""
    states = await states_by_key(session, deployment_id, kind)
    out = []
    for definition in await instigators.all_definitions(session, kind, deployment_id):
        if location_name is not None and definition.location_name != location_name:
            continue
        if repository_name is not None and definition.repository_name != repository_name:
            continue
        key = (definition.location_name, definition.repository_name, definition.name)
        out.append((definition, states.get(key)))
    return out


async def find_definition(
    session: AsyncSession,
    deployment_id: str,
    kind: InstigatorKind,
    location_name: str,
    name: str,
    repository_name: str | None,
) -> Definition:
    """The one definition of ``kind`` named ``name`` in the location.

    Raises:
        NotFoundError: there is none.
        BadInputError: several repositories have one (name the repository).
    """
    found = [
        d
        for d, _ in await definitions_with_states(
            session, deployment_id, kind, location_name, repository_name
        )
        if d.name == name
    ]
    if not found:
        raise NotFoundError(f"no {kind} named {name!r} in code location {location_name!r}")
    if len(found) > 1:
        raise BadInputError(f"{kind} {name!r} is in several repositories; name one")
    return found[0]

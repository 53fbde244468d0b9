"""Work about code locations: queue a load (and mark the location LOADING), a reload, and
the removal that tells the agent to stop the location's code server."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import CodeLocation, LoadStatus
from tether.controlplane.errors import NotFoundError
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.store import locations
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import LoadLocationPayload, WorkKind


async def queue_load(
    session: AsyncSession,
    queue: WorkQueue,
    location: CodeLocation,
    *,
    traceparent: str | None = None,
    restart: bool = False,
) -> str:
    """Queue a ``load_location`` work item for ``location`` and mark it LOADING.

    ``restart``: the agent starts a new code server, re-importing the code, even if one
    with this config runs (a user's reload); else a running one's snapshot will do.
    """
    location.load_status = LoadStatus.LOADING
    location.updated_at = time.time()
    return queue.enqueue(
        session,
        deployment_id=location.deployment_id,
        kind=WorkKind.LOAD_LOCATION,
        location=LocationConfig.model_validate(location.config),
        payload=LoadLocationPayload(restart=True) if restart else None,
        traceparent=traceparent,
    )


async def reload_location(
    session: AsyncSession,
    queue: WorkQueue,
    deployment_id: str,
    name: str,
    *,
    traceparent: str | None = None,
) -> CodeLocation:
    """Queue a reload of the location named ``name``: a new code server re-imports its
    code (what a user who changed it expects), the old one serving until it is ready.

    Raises:
        NotFoundError: no such location.
    """
    location = await locations.get_location(session, deployment_id, name)
    if location is None:
        raise NotFoundError(f"no code location named {name!r}")
    await queue_load(session, queue, location, traceparent=traceparent, restart=True)
    return location


async def remove_location(
    session: AsyncSession,
    deployment_id: str,
    name: str,
    *,
    queue: WorkQueue | None = None,
    traceparent: str | None = None,
) -> CodeLocation:
    """Delete the location named ``name``; return its row as it was.

    Launching on the location is refused from now on, and its schedules and sensors stop
    being evaluated because the daemons only walk existing, loaded locations. A load still
    in flight finds no row when its result arrives and is dropped. With ``queue``, a
    ``stop_location`` work item tells the agent to stop the location's code server (runs
    already started finish).

    Raises:
        NotFoundError: no such location.
    """
    location = await locations.get_location(session, deployment_id, name)
    if location is None:
        raise NotFoundError(f"no code location named {name!r}")
    if queue is not None:
        queue.enqueue(
            session,
            deployment_id=deployment_id,
            kind=WorkKind.STOP_LOCATION,
            location=LocationConfig.model_validate(location.config),
            traceparent=traceparent,
        )
    await locations.delete_location(session, location)
    return location

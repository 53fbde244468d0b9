"""Deployments in the metadata DB: list, create (optionally from a template), delete.

A deployment is a tenant: every other row names one, and a token acts only within its own
(:mod:`tether.controlplane.security.auth`). Deleting one *marks it deleted* rather than
deleting its rows: ``deployments.deleted_at`` is set, its tokens are revoked (so no user,
UI session or agent of it can act any more), its schedules and sensors are stopped, its
backfills canceled and its undecided run retries dropped (so no daemon starts a run for
it); its runs, events, logs and assets stay, as history, until ``tether controlplane
prune`` ages them out. A deleted deployment's id is never reused: tokens, logs and traces
that name it keep meaning one thing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import (
    DEFAULT_DEPLOYMENT,
    ApiToken,
    Backfill,
    BackfillStatus,
    CodeLocation,
    Deployment,
    Instigator,
    InstigatorStatus,
    PendingRetry,
    Run,
)
from tether.controlplane.errors import AlreadyExistsError, BadInputError, NotFoundError
from tether.controlplane.store import deployment_settings, locations
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import RunStatus

#: What a deployment's id looks like: it appears in URLs, logs, NATS-free ids and lock names.
DEPLOYMENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class DeploymentBusyError(BadInputError):
    """A deployment with runs in progress cannot be deleted."""


def check_deployment_id(name: str) -> str:
    """``name`` if it is a valid deployment id.

    Raises:
        BadInputError: it is not (lowercase letters, digits, '-' and '_', at most 63,
            starting with a letter or digit).
    """
    if not DEPLOYMENT_ID.fullmatch(name):
        raise BadInputError(
            f"invalid deployment name {name!r}: use 1-63 lowercase letters, digits, '-' or "
            "'_', starting with a letter or digit"
        )
    return name


async def list_deployments(
    session: AsyncSession, *, include_deleted: bool = False
) -> Sequence[Deployment]:
    """The deployments, oldest first (deleted ones only if asked)."""
    stmt = select(Deployment).order_by(Deployment.created_at, Deployment.id)
    if not include_deleted:
        stmt = stmt.where(Deployment.deleted_at.is_(None))
    return (await session.execute(stmt)).scalars().all()


async def get_deployment(session: AsyncSession, deployment_id: str) -> Deployment | None:
    """The deployment ``deployment_id``, deleted or not."""
    return await session.get(Deployment, deployment_id)


async def live_deployment(session: AsyncSession, deployment_id: str) -> Deployment:
    """The deployment ``deployment_id`` if it exists and was not deleted.

    Raises:
        NotFoundError: no such deployment, or it was deleted.
    """
    row = await get_deployment(session, deployment_id)
    if row is None or row.deleted_at is not None:
        state = "was deleted" if row is not None else "does not exist"
        raise NotFoundError(f"deployment {deployment_id!r} {state}")
    return row


@dataclass(frozen=True)
class CreatedDeployment:
    """A new deployment and the code locations it got from its template."""

    deployment: Deployment
    locations: list[CodeLocation]


async def create_deployment(
    session: AsyncSession,
    name: str,
    *,
    from_deployment: str | None = None,
    now: float | None = None,
) -> CreatedDeployment:
    """Create deployment ``name`` (its id too), empty or as a copy of ``from_deployment``'s
    code locations (their configs, env values included; not their snapshots: the new
    deployment's agent loads them) and own settings. Its runs, schedules' state, tokens
    and history are not copied.

    Raises:
        BadInputError: an invalid name.
        AlreadyExistsError: a deployment of that id exists, or existed and was deleted.
        NotFoundError: ``from_deployment`` does not exist or was deleted.
    """
    check_deployment_id(name)
    now = time.time() if now is None else now
    existing = await get_deployment(session, name)
    if existing is not None:
        if existing.deleted_at is not None:
            raise AlreadyExistsError(
                f"deployment {name!r} was deleted; a deployment's id is never reused, pick "
                "another name"
            )
        raise AlreadyExistsError(f"deployment {name!r} exists")
    template = await live_deployment(session, from_deployment) if from_deployment else None
    row = Deployment(id=name, name=name, created_at=now)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        # Another request created it since the check above (its transaction committed
        # first); this one's transaction rolls back with the error.
        raise AlreadyExistsError(f"deployment {name!r} exists") from None
    copied: list[CodeLocation] = []
    if template is not None:
        for location in await locations.list_locations(session, template.id):
            config = LocationConfig.model_validate(location.config)
            copied.append(await locations.upsert_location(session, name, config))
        await deployment_settings.copy_settings(session, template.id, name, now=now)
    return CreatedDeployment(deployment=row, locations=copied)


def _in_progress() -> list[str]:
    return [str(s) for s in RunStatus if not s.is_terminal]


async def runs_in_progress(session: AsyncSession, deployment_id: str) -> list[str]:
    """Ids of the runs of ``deployment_id`` not yet ended (at most 5), and whether more."""
    stmt = (
        select(Run.id)
        .where(Run.deployment_id == deployment_id, Run.status.in_(_in_progress()))
        .order_by(Run.created_at, Run.id)
        .limit(6)
    )
    return list((await session.execute(stmt)).scalars())


async def delete_deployment(
    session: AsyncSession, deployment_id: str, *, now: float | None = None
) -> Deployment:
    """Mark ``deployment_id`` deleted (see the module docstring for what that does).

    The checks and the changes are one transaction; the tokens are revoked first, so no
    request of the deployment starts a run after the check counted them.

    Raises:
        BadInputError: it is the default deployment.
        NotFoundError: no such deployment, or it was already deleted.
        DeploymentBusyError: it has runs in progress (QUEUED, STARTING, STARTED,
            CANCELING); terminate them or let them end first.
    """
    if deployment_id == DEFAULT_DEPLOYMENT:
        raise BadInputError(f"the {DEFAULT_DEPLOYMENT!r} deployment cannot be deleted")
    row = await live_deployment(session, deployment_id)
    now = time.time() if now is None else now
    await session.execute(
        update(ApiToken)
        .where(ApiToken.deployment_id == deployment_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    busy = await runs_in_progress(session, deployment_id)
    if busy:
        total = await session.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.deployment_id == deployment_id, Run.status.in_(_in_progress()))
        )
        shown = ", ".join(busy[:5]) + (", ..." if total and total > 5 else "")
        # Raising rolls the whole transaction back, the token revocation with it.
        raise DeploymentBusyError(
            f"deployment {deployment_id!r} has {total} run(s) in progress ({shown}); "
            "terminate them or wait for them to end, then delete it"
        )
    await session.execute(
        update(Instigator)
        .where(
            Instigator.deployment_id == deployment_id,
            Instigator.status == str(InstigatorStatus.RUNNING),
        )
        .values(status=str(InstigatorStatus.STOPPED), updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Backfill)
        .where(
            Backfill.deployment_id == deployment_id,
            Backfill.status == str(BackfillStatus.REQUESTED),
        )
        .values(status=str(BackfillStatus.CANCELED), updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(PendingRetry)
        .where(PendingRetry.run_id.in_(select(Run.id).where(Run.deployment_id == deployment_id)))
        .execution_options(synchronize_session=False)
    )
    row.deleted_at = now
    await session.flush()
    return row

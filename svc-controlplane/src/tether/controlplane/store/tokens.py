"""API tokens and deployments in the metadata DB: tokens are stored and found by the
SHA-256 of their secret (hashing is :mod:`tether.controlplane.security.auth`'s)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT, ApiToken, Deployment
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.errors import BadInputError, NotFoundError


async def ensure_deployment(session: AsyncSession, deployment_id: str = DEFAULT_DEPLOYMENT) -> None:
    """Create deployment ``deployment_id`` unless it exists."""
    stmt = upsert_insert(session, Deployment).values(
        id=deployment_id, name=deployment_id, created_at=time.time()
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))


async def deployment_deleted(session: AsyncSession, deployment_id: str) -> bool:
    """Whether ``deployment_id`` was deleted (``deleteDeployment``)."""
    deleted_at = await session.scalar(
        select(Deployment.deleted_at).where(Deployment.id == deployment_id)
    )
    return deleted_at is not None


async def insert_token(
    session: AsyncSession, *, token_hash: str, name: str, role: str, deployment_id: str
) -> bool:
    """Store a token by its hash (its deployment must exist).

    Returns:
        True if the token was new, False if its hash was already registered.
    """
    stmt = (
        upsert_insert(session, ApiToken)
        .values(
            deployment_id=deployment_id,
            name=name,
            role=role,
            token_hash=token_hash,
            created_at=time.time(),
        )
        .on_conflict_do_nothing(index_elements=["token_hash"])
        .returning(ApiToken.id)
    )
    return (await session.execute(stmt)).first() is not None


async def token_by_hash(session: AsyncSession, token_hash: str) -> ApiToken | None:
    """The row of the token stored under ``token_hash``, revoked or not."""
    return await session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))


async def list_tokens(session: AsyncSession, deployment_id: str) -> Sequence[ApiToken]:
    """Tokens of ``deployment_id`` (revoked ones too), oldest first."""
    stmt = (
        select(ApiToken)
        .where(ApiToken.deployment_id == deployment_id)
        .order_by(ApiToken.created_at, ApiToken.id)
    )
    return (await session.execute(stmt)).scalars().all()


async def revoke_token(
    session: AsyncSession,
    deployment_id: str,
    *,
    token_id: int | None = None,
    name: str | None = None,
) -> ApiToken:
    """Revoke one token of ``deployment_id``, by id or by (unambiguous) name.

    Revoking is immediate (every request looks its token up) and idempotent.

    Raises:
        BadInputError: neither or both of id and name, or a name several live tokens share.
        NotFoundError: no such token in this deployment.
    """
    if (token_id is None) == (name is None):
        raise BadInputError("name exactly one of the token's id or its name")
    stmt = select(ApiToken).where(ApiToken.deployment_id == deployment_id)
    if token_id is not None:
        stmt = stmt.where(ApiToken.id == token_id)
    else:
        stmt = stmt.where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    rows = (await session.execute(stmt)).scalars().all()
    what = f"id {token_id}" if token_id is not None else f"name {name!r}"
    if not rows:
        raise NotFoundError(f"no live token with {what} in this deployment")
    if len(rows) > 1:
        ids = ", ".join(str(r.id) for r in rows)
        raise BadInputError(f"{len(rows)} live tokens are named {name!r} (ids {ids}); use an id")
    (row,) = rows
    if row.revoked_at is None:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == row.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=time.time())
            .execution_options(synchronize_session=False)
        )
        await session.refresh(row)
    return row

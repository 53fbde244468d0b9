"""API tokens: issue them, store only their hash, and resolve a bearer token to a deployment."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT, ApiToken, Deployment
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.errors import UnauthenticatedError

#: Prefix of every issued token, so leaked tokens are recognisable by secret scanners.
TOKEN_PREFIX = "tether_"


class Role(StrEnum):
    """What a token may do."""

    AGENT = "agent"
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's role within its deployment."""

    deployment_id: str
    role: Role
    token_name: str


def new_token() -> str:
    """Return a fresh random plaintext token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which ``token`` is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """Extract the token from an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def ensure_deployment(session: AsyncSession, deployment_id: str = DEFAULT_DEPLOYMENT) -> None:
    """Create deployment ``deployment_id`` unless it exists."""
    stmt = upsert_insert(session, Deployment).values(
        id=deployment_id, name=deployment_id, created_at=time.time()
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))


async def register_token(
    session: AsyncSession,
    token: str,
    *,
    name: str,
    role: Role,
    deployment_id: str = DEFAULT_DEPLOYMENT,
) -> bool:
    """Store the hash of ``token`` (creating its deployment if needed).

    Returns:
        True if the token was new, False if its hash was already registered.
    """
    await ensure_deployment(session, deployment_id)
    stmt = (
        upsert_insert(session, ApiToken)
        .values(
            deployment_id=deployment_id,
            name=name,
            role=str(role),
            token_hash=hash_token(token),
            created_at=time.time(),
        )
        .on_conflict_do_nothing(index_elements=["token_hash"])
        .returning(ApiToken.id)
    )
    return (await session.execute(stmt)).first() is not None


async def create_token(
    session: AsyncSession, *, name: str, role: Role, deployment_id: str = DEFAULT_DEPLOYMENT
) -> str:
    """Issue a new token; the plaintext is returned once and never stored."""
    token = new_token()
    await register_token(session, token, name=name, role=role, deployment_id=deployment_id)
    return token


async def authenticate(session: AsyncSession, authorization: str | None, role: Role) -> Principal:
    """Resolve an ``Authorization`` header to the principal of a token with ``role``.

    Raises:
        UnauthenticatedError: no bearer token, an unknown token, or one with another role.
    """
    token = bearer_token(authorization)
    if token is None:
        raise UnauthenticatedError(
            f"this operation needs an {role} token: send 'Authorization: Bearer <token>'"
        )
    digest = hash_token(token)
    row = (
        await session.execute(select(ApiToken).where(ApiToken.token_hash == digest))
    ).scalar_one_or_none()
    # The lookup is by hash, so timing reveals nothing of the token; compare anyway to be explicit.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise UnauthenticatedError("invalid API token")
    if row.role != role:
        raise UnauthenticatedError(f"this operation needs an {role} token, not a {row.role} token")
    return Principal(deployment_id=row.deployment_id, role=Role(row.role), token_name=row.name)

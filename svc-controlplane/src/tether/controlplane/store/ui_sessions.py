"""UI sessions (table ``ui_sessions``), by the SHA-256 of their id; the rules of what a live
session is and how cookies carry it are :mod:`tether.controlplane.ui.sessions`'."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import ApiToken, UiSession


async def insert_session(
    session: AsyncSession,
    *,
    id_hash: str,
    token_id: int,
    now: float,
    expires_at: float,
    group_hash: str | None = None,
) -> None:
    """Record a new session acting as token ``token_id``, in group ``group_hash`` (None: a
    new group, named by this session)."""
    session.add(
        UiSession(
            id_hash=id_hash,
            token_id=token_id,
            group_hash=group_hash or id_hash,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
        )
    )
    await session.flush()


async def session_and_token(
    session: AsyncSession, id_hash: str
) -> tuple[UiSession, ApiToken] | None:
    """The session stored under ``id_hash`` and the token it acts as; None if unknown."""
    row = (
        await session.execute(
            select(UiSession, ApiToken)
            .join(ApiToken, ApiToken.id == UiSession.token_id)
            .where(UiSession.id_hash == id_hash)
        )
    ).first()
    return None if row is None else (row[0], row[1])


def _in_group(group_hash: str) -> ColumnElement[bool]:
    # Sessions from before groups have no group_hash: each is a group of one.
    return or_(UiSession.group_hash == group_hash, UiSession.id_hash == group_hash)


async def group_members(session: AsyncSession, group_hash: str) -> list[tuple[UiSession, ApiToken]]:
    """The sessions of group ``group_hash`` with their tokens, live or not."""
    rows = await session.execute(
        select(UiSession, ApiToken)
        .join(ApiToken, ApiToken.id == UiSession.token_id)
        .where(_in_group(group_hash))
        .order_by(ApiToken.deployment_id, UiSession.created_at)
    )
    return [(row[0], row[1]) for row in rows]


async def rekey(session: AsyncSession, id_hash: str, new_id_hash: str) -> None:
    """Give the session stored under ``id_hash`` a new id (its old id stops working); it
    stays in its group (a session from before groups keeps its old id as the group's)."""
    await session.execute(
        update(UiSession)
        .where(UiSession.id_hash == id_hash)
        .values(id_hash=new_id_hash, group_hash=func.coalesce(UiSession.group_hash, id_hash))
        .execution_options(synchronize_session=False)
    )


async def mark_seen(session: AsyncSession, group_hash: str, now: float) -> None:
    """Record that the group's sessions were used at ``now`` (one browser: one idle clock)."""
    await session.execute(
        update(UiSession)
        .where(_in_group(group_hash))
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )


async def revoke(session: AsyncSession, id_hash: str, now: float) -> None:
    """End one session (idempotent)."""
    await session.execute(
        update(UiSession)
        .where(UiSession.id_hash == id_hash, UiSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def revoke_group(session: AsyncSession, group_hash: str, now: float) -> None:
    """End every session of the group (sign-out; idempotent)."""
    await session.execute(
        update(UiSession)
        .where(_in_group(group_hash), UiSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )

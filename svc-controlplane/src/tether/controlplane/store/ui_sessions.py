"""UI sessions (table ``ui_sessions``), by the SHA-256 of their id; the rules of what a live
session is and how cookies carry it are :mod:`tether.controlplane.ui.sessions`'."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import ApiToken, UiSession


async def insert_session(
    session: AsyncSession, *, id_hash: str, token_id: int, now: float, expires_at: float
) -> None:
    """Record a new session acting as token ``token_id``."""
    session.add(
        UiSession(
            id_hash=id_hash,
            token_id=token_id,
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


async def mark_seen(session: AsyncSession, id_hash: str, now: float) -> None:
    """Record that the session was used at ``now``."""
    await session.execute(
        update(UiSession)
        .where(UiSession.id_hash == id_hash)
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )


async def revoke(session: AsyncSession, id_hash: str, now: float) -> None:
    """End the session (idempotent)."""
    await session.execute(
        update(UiSession)
        .where(UiSession.id_hash == id_hash, UiSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )

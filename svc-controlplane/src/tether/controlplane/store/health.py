"""The health check's question to the metadata DB."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def ping(session: AsyncSession) -> None:
    """Run the cheapest statement there is; raises whatever the DB or driver raises."""
    await session.execute(text("SELECT 1"))

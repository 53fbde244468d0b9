"""Agents as known from their heartbeats."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import Agent
from tether.controlplane.db.statements import upsert_insert
from tether.shared.wire.agent import Heartbeat


async def record_heartbeat(session: AsyncSession, deployment_id: str, heartbeat: Heartbeat) -> None:
    """Insert or update the agent's row with this heartbeat."""
    body = heartbeat.model_dump(mode="json")
    now = time.time()
    stmt = upsert_insert(session, Agent.__table__).values(
        deployment_id=deployment_id,
        agent_id=heartbeat.agent_id,
        last_heartbeat=now,
        heartbeat=body,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["deployment_id", "agent_id"],
        set_={"last_heartbeat": now, "heartbeat": body},
    )
    await session.execute(stmt)


async def list_agents(session: AsyncSession, deployment_id: str) -> Sequence[Agent]:
    """Agents of ``deployment_id`` that ever sent a heartbeat, most recent first."""
    stmt = (
        select(Agent)
        .where(Agent.deployment_id == deployment_id)
        .order_by(Agent.last_heartbeat.desc())
    )
    return (await session.execute(stmt)).scalars().all()

"""Periodic heartbeats to the control plane."""

from __future__ import annotations

import asyncio
import logging

from tether.shared.agent_client import AgentClient
from tether.shared.messages import Heartbeat

log = logging.getLogger(__name__)

SERVICE = "poller"


async def heartbeat_loop(client: AgentClient, agent_id: str, interval_s: float) -> None:
    """Report ``{"poller": "RUNNING"}`` every ``interval_s`` seconds until cancelled.

    A failed heartbeat is logged and the loop goes on: the control plane marking the
    agent stale for a while is better than the poller dying with it.
    """
    while True:
        try:
            await client.heartbeat(Heartbeat(agent_id=agent_id, services={SERVICE: "RUNNING"}))
        except Exception as err:  # noqa: BLE001 - any failure is retried next interval
            log.warning("heartbeat failed: %r", err)
        await asyncio.sleep(interval_s)

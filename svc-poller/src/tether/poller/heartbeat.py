"""Periodic heartbeats to the control plane: the whole agent as its services report it."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.js import JetStreamContext
from tether.shared.agent_client import AgentClient
from tether.shared.nats.status import StatusReporter, queue_depths, read_statuses
from tether.shared.runtime.service import raise_if_cancelling
from tether.shared.wire.agent import Heartbeat

log = logging.getLogger(__name__)


async def agent_heartbeat(js: JetStreamContext, agent_id: str, me: StatusReporter) -> Heartbeat:
    """The agent's heartbeat from the status bucket and the streams' backlogs.

    With NATS unreachable, the poller still reports itself and says why it knows no more.
    """
    try:
        async with asyncio.timeout(2):
            statuses = await read_statuses(js)
            queues = await queue_depths(js)
    except (nats.errors.Error, OSError, TimeoutError) as err:
        own = me.status()
        return Heartbeat(
            agent_id=agent_id,
            services={f"{own.service}/{own.instance}": "DEGRADED"},
            errors=[*own.errors, f"poller: NATS unreachable ({err!r})"],
        )
    if not any(s.key == me.key for s in statuses):
        statuses.append(me.status())
    return Heartbeat(
        agent_id=agent_id,
        services={f"{s.service}/{s.instance}": s.state for s in statuses},
        code_servers=[cs for s in statuses for cs in s.code_servers],
        queues=queues,
        errors=[f"{s.service}/{s.instance}: {e}" for s in statuses for e in s.errors],
    )


async def heartbeat_loop(
    client: AgentClient,
    js: JetStreamContext,
    agent_id: str,
    interval_s: float,
    me: StatusReporter,
) -> None:
    """Send the agent's heartbeat every ``interval_s`` seconds until cancelled.

    A failed heartbeat is logged and the loop goes on: the control plane marking the
    agent stale for a while is better than the poller dying with it.
    """
    while True:
        try:
            await client.heartbeat(await agent_heartbeat(js, agent_id, me))
        except Exception as err:  # noqa: BLE001 - any failure is retried next interval
            log.warning("heartbeat failed: %r", err)
            me.error(f"heartbeat failed: {err!r}")
        raise_if_cancelling()
        await asyncio.sleep(interval_s)

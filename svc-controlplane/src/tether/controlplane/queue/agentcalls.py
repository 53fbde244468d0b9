"""Asking an agent a question and waiting for its answer (partition keys for the API).

The control plane never calls an agent: a question is a work item like any other, and its
answer the item's result. A request that needs the answer at once queues the item, then
waits for its result up to a deadline; the item expires at that deadline, so an agent that
shows up later does not answer a question nobody waits for any more.

The wait is woken by the commit that stores the result (:meth:`WorkQueue.results_signal`),
so the answer is returned as soon as it is in. The database is also looked at every
``FALLBACK_POLL_S``: a result stored through another control plane replica wakes nobody
here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from pydantic import BaseModel
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import WorkResultRow
from tether.controlplane.errors import ApiError
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.store import workitems
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkKind

#: Seconds between looks at the database while no commit here woke the wait (the result
#: may be stored through another replica).
FALLBACK_POLL_S = 0.5


class AgentTimeoutError(ApiError):
    """No agent answered a question in time."""

    code = "AGENT_TIMEOUT"


async def ask_agent(
    db: Database,
    queue: WorkQueue,
    *,
    deployment_id: str,
    location: LocationConfig,
    kind: WorkKind,
    payload: BaseModel,
    timeout_s: float,
) -> WorkResultRow:
    """Queue a work item and wait for its result.

    Raises:
        AgentTimeoutError: no result within ``timeout_s``.
    """
    deadline = time.time() + timeout_s
    async with db.transaction() as session:
        item_id = queue.enqueue(
            session,
            deployment_id=deployment_id,
            kind=kind,
            location=location,
            payload=payload,
            expires_at=deadline,
        )
    while True:
        # Captured before the look: a result committed meanwhile still wakes the wait.
        stored = queue.results_signal(kind)
        async with db.reading() as session:
            result = await workitems.get_result(session, item_id)
        if result is not None:
            return result
        remaining = deadline - time.time()
        if remaining <= 0:
            raise AgentTimeoutError(
                f"no agent answered {kind} for location {location.name!r} within "
                f"{timeout_s:g}s (is an agent running for substrate {location.substrate!r}?)"
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(FALLBACK_POLL_S, remaining)):
                await stored.wait()

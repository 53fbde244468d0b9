"""Where compute logs go: the ``LogSink`` seam and its implementations.

The control plane sink is the default; a customer-storage (S3) sink that uploads objects
and sends the control plane only their keys plugs in behind the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tether.shared.agent_client import AgentClient
from tether.shared.messages import LogChunk


class LogSink(Protocol):
    """Stores compute-log chunks idempotently by ``(run_id, step_key, stream, offset)``."""

    async def write(self, chunks: Sequence[LogChunk]) -> None:
        """Store ``chunks``; raise to have them retried."""
        ...


class ControlPlaneSink:
    """Uploads chunks to the control plane's ``appendComputeLogs``."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client

    async def write(self, chunks: Sequence[LogChunk]) -> None:
        """Upload ``chunks`` (duplicates are ignored by the control plane)."""
        await self._client.append_compute_logs(chunks)

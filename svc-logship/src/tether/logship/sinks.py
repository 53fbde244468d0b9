"""Where compute logs go: the ``LogSink`` seam and its implementations.

``ControlPlaneSink`` uploads the bytes to the control plane. ``S3Sink`` writes them as
objects to the customer's own bucket and sends the control plane only pointers to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tether.logship.objectstore import S3LogStore
from tether.shared.agent_client import AgentClient
from tether.shared.wire.logs import ComputeLogPointer, LogChunk


class LogSink(Protocol):
    """Stores compute-log chunks idempotently by ``(run_id, step_key, stream, offset)``."""

    async def write(self, chunks: Sequence[LogChunk]) -> object:
        """Store ``chunks``; raise to have them retried. May return an upload outcome whose
        ``refused`` items (by index) the relay dead-letters."""
        ...


class ControlPlaneSink:
    """Uploads chunks to the control plane's ``appendComputeLogs``."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client

    async def write(self, chunks: Sequence[LogChunk]) -> object:
        """Upload ``chunks`` (duplicates are ignored by the control plane); return the
        outcome, whose refused chunks the relay dead-letters."""
        return await self._client.append_compute_logs(chunks)


@dataclass
class LogObject:
    """Contiguous bytes of one step's stream, to be stored as one object."""

    run_id: str
    step_key: str
    stream: str
    offset: int
    parts: list[bytes] = field(default_factory=list)
    end: int = 0
    timestamp: float = 0.0

    @property
    def data(self) -> bytes:
        """The object's bytes."""
        return b"".join(self.parts)


def contiguous_objects(chunks: Sequence[LogChunk]) -> list[LogObject]:
    """Merge a batch's chunks into one object per contiguous byte range of each stream.

    Fewer, larger objects than chunks (S3 bills and lists per object). Chunks of the same
    natural key carry the same bytes, so a chunk the range already covers (a redelivered
    copy in the same batch) adds nothing, and one that overlaps adds only its new tail.
    """
    by_stream: dict[tuple[str, str, str], list[LogChunk]] = {}
    for chunk in chunks:
        if chunk.data:
            key = (chunk.run_id, chunk.step_key, str(chunk.stream))
            by_stream.setdefault(key, []).append(chunk)
    objects: list[LogObject] = []
    for (run_id, step_key, stream), group in by_stream.items():
        current: LogObject | None = None
        for chunk in sorted(group, key=lambda c: c.offset):
            end = chunk.offset + len(chunk.data)
            if current is not None and chunk.offset <= current.end:
                if end > current.end:
                    current.parts.append(chunk.data[current.end - chunk.offset :])
                    current.end = end
                current.timestamp = max(current.timestamp, chunk.timestamp)
                continue
            current = LogObject(
                run_id, step_key, stream, chunk.offset, [chunk.data], end, chunk.timestamp
            )
            objects.append(current)
    return objects


class S3Sink:
    """Writes chunks as objects to the customer's bucket, then uploads pointers to them.

    Order matters for "nothing is lost": a pointer reaches the control plane only after its
    object is stored, and the relay acks the chunks only after the pointers are stored. A
    failure anywhere raises, the relay retries the batch, and the retry rewrites the same
    keys (a key is a function of the byte range), so nothing is duplicated.

    Args:
        store: the bucket and prefix.
        client: the agent API client (for ``appendComputeLogPointers``).
    """

    def __init__(self, store: S3LogStore, client: AgentClient) -> None:
        self._store = store
        self._client = client

    async def write(self, chunks: Sequence[LogChunk]) -> None:
        """Store ``chunks`` as objects and their pointers; raise to have them retried."""
        objects = contiguous_objects(chunks)
        if not objects:
            return
        pointers = [
            ComputeLogPointer(
                run_id=o.run_id,
                step_key=o.step_key,
                stream=o.stream,  # validated into a LogStream
                offset=o.offset,
                length=o.end - o.offset,
                bucket=self._store.bucket,
                key=self._store.key(o.run_id, o.step_key, o.stream, o.offset, o.end),
                timestamp=o.timestamp,
            )
            for o in objects
        ]
        # The store bounds how many puts run at once; gather waits for all of them, so a
        # failed one fails the batch only after the others finished (none left dangling).
        outcomes = await asyncio.gather(
            *(self._store.put(p.key, o.data) for p, o in zip(pointers, objects, strict=True)),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        await self._client.append_compute_log_pointers(pointers)

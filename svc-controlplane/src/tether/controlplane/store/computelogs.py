"""Compute logs: raw stdout/stderr chunks stored idempotently, read back as text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import ComputeLogChunk
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.store.runs import require_runs
from tether.shared.messages import LogChunk


@dataclass(frozen=True)
class LogSlice:
    """Contiguous bytes of one step's stream, from ``offset``."""

    step_key: str
    stream: str
    offset: int
    data: bytes

    @property
    def next_offset(self) -> int:
        """The offset to ask for next time."""
        return self.offset + len(self.data)


async def append_chunks(
    session: AsyncSession, deployment_id: str, chunks: Sequence[LogChunk]
) -> tuple[int, int]:
    """Store chunks idempotently on ``(run_id, step_key, stream, offset)``.

    Returns:
        (stored, duplicates).

    Raises:
        BadInputError: a chunk names a run that is not in ``deployment_id``.
    """
    await require_runs(session, deployment_id, (c.run_id for c in chunks))
    table = ComputeLogChunk.__table__
    if not chunks:
        return 0, 0
    # Compiled once, executed for every chunk (see runs.store_events).
    stmt = (
        upsert_insert(session, table)
        .on_conflict_do_nothing(index_elements=["run_id", "step_key", "stream", "offset"])
        .returning(table.c.id)
    )
    rows = [
        {
            "run_id": c.run_id,
            "step_key": c.step_key,
            "stream": str(c.stream),
            "offset": c.offset,
            "data": c.data,
            "timestamp": c.timestamp,
        }
        for c in chunks
    ]
    stored = len((await session.execute(stmt, rows)).all())
    return stored, len(chunks) - stored


async def read_logs(
    session: AsyncSession,
    run_id: str,
    *,
    step_key: str | None = None,
    stream: str | None = None,
    offset: int = 0,
) -> list[LogSlice]:
    """Each (step, stream)'s bytes from ``offset``, concatenated in offset order.

    A slice stops at the first gap (a chunk still in flight), so ``next_offset`` is where
    a reader resumes without missing anything.
    """
    stmt = select(ComputeLogChunk).where(ComputeLogChunk.run_id == run_id)
    if step_key is not None:
        stmt = stmt.where(ComputeLogChunk.step_key == step_key)
    if stream is not None:
        stmt = stmt.where(ComputeLogChunk.stream == stream)
    stmt = stmt.order_by(ComputeLogChunk.step_key, ComputeLogChunk.stream, ComputeLogChunk.offset)
    slices: list[LogSlice] = []
    current: tuple[str, str] | None = None
    parts: list[bytes] = []
    position = offset
    gap = False

    def flush() -> None:
        if current is not None:
            slices.append(LogSlice(current[0], current[1], offset, b"".join(parts)))

    for chunk in (await session.execute(stmt)).scalars():
        key = (chunk.step_key, chunk.stream)
        if key != current:
            flush()
            current, parts, position, gap = key, [], offset, False
        end = chunk.offset + len(chunk.data)
        if gap or end <= position:
            continue
        if chunk.offset > position:
            gap = True
            continue
        parts.append(chunk.data[position - chunk.offset :])
        position = end
    flush()
    return slices

"""Compute logs: raw stdout/stderr chunks stored idempotently, read back as text; or, when
an agent ships them to customer storage (S3), only pointers to the objects holding them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import ComputeLogChunk, ComputeLogPointer
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.store.runs import require_runs
from tether.shared.messages import ComputeLogPointer as PointerMessage
from tether.shared.messages import LogChunk

#: ``StreamSummary.storage`` of logs whose bytes the control plane holds.
CONTROL_PLANE_STORAGE = "controlplane"


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


@dataclass(frozen=True)
class StreamSummary:
    """What is known of one step's stream, wherever its bytes are.

    Attributes:
        storage: ``controlplane`` (bytes in this DB) or the agent's storage (``s3``).
        size: where the stream's known output ends (bytes).
        objects: objects in customer storage (0 for the control plane).
        location: ``s3://bucket/`` of the objects, if in customer storage.
    """

    step_key: str
    stream: str
    storage: str
    size: int
    objects: int = 0
    location: str | None = None


@dataclass(frozen=True)
class StoredPiece:
    """One object of customer storage to read, and how much of its start to skip because
    an earlier object already covers it (a batch redelivered with other neighbours)."""

    offset: int
    length: int
    skip: int
    storage: str
    bucket: str
    key: str

    @property
    def end(self) -> int:
        """The offset after its last byte."""
        return self.offset + self.length


async def append_pointers(
    session: AsyncSession, deployment_id: str, pointers: Sequence[PointerMessage]
) -> tuple[int, int]:
    """Store pointers idempotently on ``(run_id, step_key, stream, offset)``.

    A pointer whose natural key is already stored replaces it only if it is longer: a
    redelivered batch merged with more chunks makes a longer object from the same offset,
    which covers everything the shorter one did, so no byte loses its pointer.

    Returns:
        (stored, duplicates).

    Raises:
        BadInputError: a pointer names a run that is not in ``deployment_id``.
    """
    await require_runs(session, deployment_id, (p.run_id for p in pointers))
    if not pointers:
        return 0, 0
    # One row per natural key (the longest): PostgreSQL refuses an INSERT that would
    # update the same row twice.
    longest: dict[tuple[str, str, str, int], PointerMessage] = {}
    for p in pointers:
        key = (p.run_id, p.step_key, str(p.stream), p.offset)
        if key not in longest or p.length > longest[key].length:
            longest[key] = p
    table = ComputeLogPointer.__table__
    insert = upsert_insert(session, table)
    stmt = insert.on_conflict_do_update(
        index_elements=["run_id", "step_key", "stream", "offset"],
        set_={
            name: insert.excluded[name]
            for name in ("length", "storage", "bucket", "object_key", "timestamp")
        },
        where=insert.excluded.length > table.c.length,
    ).returning(table.c.id)
    rows = [
        {
            "run_id": p.run_id,
            "step_key": p.step_key,
            "stream": str(p.stream),
            "offset": p.offset,
            "length": p.length,
            "storage": p.storage,
            "bucket": p.bucket,
            "object_key": p.key,
            "timestamp": p.timestamp,
        }
        for p in longest.values()
    ]
    stored = len((await session.execute(stmt, rows)).all())
    return stored, len(pointers) - stored


async def stream_summaries(session: AsyncSession, run_id: str) -> list[StreamSummary]:
    """Every (step, stream) of a run with output, and where its bytes are."""
    chunk = ComputeLogChunk
    in_db = (
        select(
            chunk.step_key,
            chunk.stream,
            func.max(chunk.offset + func.length(chunk.data)),
        )
        .where(chunk.run_id == run_id)
        .group_by(chunk.step_key, chunk.stream)
    )
    summaries = [
        StreamSummary(step_key, stream, CONTROL_PLANE_STORAGE, int(size or 0))
        for step_key, stream, size in await session.execute(in_db)
    ]
    stmt = (
        select(
            ComputeLogPointer.step_key,
            ComputeLogPointer.stream,
            ComputeLogPointer.offset,
            ComputeLogPointer.length,
            ComputeLogPointer.storage,
            ComputeLogPointer.bucket,
        )
        .where(ComputeLogPointer.run_id == run_id)
        .order_by(ComputeLogPointer.step_key, ComputeLogPointer.stream, ComputeLogPointer.offset)
    )
    grouped: dict[tuple[str, str], list[tuple[int, int, str, str]]] = {}
    for step_key, stream, offset, length, storage, bucket in await session.execute(stmt):
        grouped.setdefault((step_key, stream), []).append(
            (offset, offset + length, storage, bucket)
        )
    for (step_key, stream), rows in grouped.items():
        storage, bucket = rows[-1][2], rows[-1][3]
        summaries.append(
            StreamSummary(
                step_key,
                stream,
                storage,
                max(r[1] for r in rows),
                objects=len(rows),
                location=f"{storage}://{bucket}/",
            )
        )
    return sorted(summaries, key=lambda s: (s.step_key, s.stream))


async def stored_pieces(
    session: AsyncSession,
    run_id: str,
    step_key: str,
    stream: str,
    *,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[StoredPiece], bool]:
    """The objects that hold a stream's bytes from ``offset`` on, in order, without
    redundant ones; and whether more follow after ``limit`` pieces.

    Concatenating each piece's bytes after its ``skip`` gives the stream; a piece whose
    ``offset + skip`` lies past the previous piece's end follows a gap (bytes in flight).
    """
    stmt = (
        select(ComputeLogPointer)
        .where(
            ComputeLogPointer.run_id == run_id,
            ComputeLogPointer.step_key == step_key,
            ComputeLogPointer.stream == stream,
            ComputeLogPointer.offset + ComputeLogPointer.length > offset,
        )
        .order_by(ComputeLogPointer.offset, ComputeLogPointer.length.desc())
    )
    pieces: list[StoredPiece] = []
    position = offset
    more = False
    for row in (await session.execute(stmt)).scalars():
        end = row.offset + row.length
        if end <= position:
            continue  # covered by a longer object
        if len(pieces) >= limit:
            more = True
            break
        skip = max(position - row.offset, 0)
        pieces.append(
            StoredPiece(row.offset, row.length, skip, row.storage, row.bucket, row.object_key)
        )
        position = end
    return pieces, more

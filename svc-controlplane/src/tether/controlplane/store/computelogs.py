"""Compute logs: raw stdout/stderr chunks stored idempotently, read back as text; or, when
an agent ships them to customer storage (S3), only pointers to the objects holding them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import ComputeLogChunk, ComputeLogPointer
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.store.runs import require_runs
from tether.shared.wire.logs import ComputeLogPointer as PointerMessage
from tether.shared.wire.logs import LogChunk

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


class LogBudget:
    """Bytes of compute logs one response may still carry, shared by all its computeLogs
    fields (aliases of one run, or of many): taken before reading, the unused returned.

    Taking and giving back never await, so concurrent resolvers of one request see a
    consistent balance.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def take(self, wanted: int) -> int:
        """Reserve up to ``wanted`` bytes; return how many were granted."""
        granted = max(min(wanted, self.left), 0)
        self.left -= granted
        return granted

    def give_back(self, unused: int) -> None:
        """Return bytes reserved but not used."""
        self.left += max(unused, 0)


async def read_logs(
    session: AsyncSession,
    run_id: str,
    *,
    step_key: str | None = None,
    stream: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    budget: LogBudget | None = None,
) -> list[LogSlice]:
    """Each (step, stream)'s bytes from ``offset``, concatenated in offset order.

    Only chunks that end past ``offset`` are loaded, so a reader following a stream from
    its last ``next_offset`` (the UI's tail, ``tether run logs --follow``) costs what is
    new, not the whole stream again. Every (step, stream) gets a slice, empty when nothing
    is past ``offset``. A slice stops at the first gap (a chunk still in flight), so
    ``next_offset`` is where a reader resumes without missing anything; and after ``limit``
    bytes (if set), moved back to the start of a UTF-8 character cut in two. With
    ``budget``, all slices together hold at most what it grants (``limit`` is then
    required); the (step, stream)s past it get empty slices.
    """
    where = [ComputeLogChunk.run_id == run_id]
    if step_key is not None:
        where.append(ComputeLogChunk.step_key == step_key)
    if stream is not None:
        where.append(ComputeLogChunk.stream == stream)
    order = (ComputeLogChunk.step_key, ComputeLogChunk.stream)
    keys = (await session.execute(select(*order).where(*where).distinct().order_by(*order))).all()
    if budget is None:
        return await _read_slices(session, where, keys, offset, limit)
    assert limit is not None, "a budgeted read needs a limit per (step, stream)"
    # Reserved at once (no await in between), so concurrent aliases cannot overdraw it.
    granted = budget.take(limit * len(keys))
    slices: list[LogSlice] = []
    left = granted
    for key in keys:
        # One (step, stream) at a time, so memory stays within what was granted.
        if left <= 0:
            slices.append(LogSlice(key[0], key[1], offset, b""))
            continue
        (piece,) = await _read_slices(session, where, [key], offset, min(limit, left))
        left -= len(piece.data)
        slices.append(piece)
    budget.give_back(left)
    return slices


async def _read_slices(
    session: AsyncSession,
    where: list[Any],
    keys: Sequence[Any],
    offset: int,
    limit: int | None,
) -> list[LogSlice]:
    """The slices of ``keys`` (every (step, stream) matching ``where``, or just one)."""
    order = (ComputeLogChunk.step_key, ComputeLogChunk.stream)
    if len(keys) == 1:
        where = [
            *where,
            ComputeLogChunk.step_key == keys[0][0],
            ComputeLogChunk.stream == keys[0][1],
        ]
    # length() of a BLOB/bytea reads its size, not its bytes (SQLite and PostgreSQL).
    wanted = [ComputeLogChunk.offset + func.length(ComputeLogChunk.data) > offset]
    if limit is not None:
        wanted.append(ComputeLogChunk.offset < offset + limit)  # nothing past the limit
    rows = await session.execute(
        select(*order, ComputeLogChunk.offset, ComputeLogChunk.data)
        .where(*where, *wanted)
        .order_by(*order, ComputeLogChunk.offset)
    )
    pieces: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    for row_step, row_stream, chunk_offset, data in rows:
        pieces.setdefault((row_step, row_stream), []).append((chunk_offset, data))
    return [
        LogSlice(
            key_step,
            key_stream,
            offset,
            _contiguous(pieces.get((key_step, key_stream), []), offset, limit),
        )
        for key_step, key_stream in keys
    ]


def _contiguous(chunks: Sequence[tuple[int, bytes]], offset: int, limit: int | None) -> bytes:
    """The bytes from ``offset`` up to the first gap in ``chunks`` (in offset order, all
    ending past ``offset``), at most ``limit`` of them, not ending inside a character."""
    parts: list[bytes] = []
    position = offset
    for chunk_offset, data in chunks:
        if chunk_offset > position:
            break  # a gap: a chunk still in flight
        end = chunk_offset + len(data)
        if end <= position:
            continue  # an overlapping re-send, already covered
        parts.append(data[position - chunk_offset :])
        position = end
        if limit is not None and position - offset >= limit:
            break
    joined = b"".join(parts)
    if limit is None or len(joined) < limit:
        return joined
    return _without_cut_character(joined[:limit])


def _without_cut_character(data: bytes) -> bytes:
    """``data`` without the start of a UTF-8 character whose other bytes are cut off."""
    for back in range(1, min(4, len(data) - 1) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: its lead is further back
        size = 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4 if byte >= 0xF0 else 1
        return data[:-back] if back < size else data
    return data


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

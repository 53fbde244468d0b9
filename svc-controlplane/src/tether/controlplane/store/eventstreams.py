"""How complete each run's stream of worker events is, and the seqs agents reported lost.

A run worker numbers its events 1, 2, 3... and its terminal event carries the last seq
(:attr:`tether.shared.wire.runs.RunEvent.stream_end`). Events reach the control plane in
any order, through any relay, any number of times; each upload adds the rows it really
inserted to the run's ``stored`` count (one ``INSERT ... ON CONFLICT DO UPDATE`` per run
in the upload's transaction: concurrent uploads of one run queue on its row, and each
adds to what the previous one committed), so the stream is complete exactly when
``stored`` reaches ``last_seq``, with no count over the run's events on the way.

Reading a stream that is not complete costs two more indexed look-ups: the highest seq
stored (the run's unique ``(run_id, seq)`` index), and the lost seqs not stored after all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import LostRunEvent, RunEventRow, RunEventStream
from tether.controlplane.db.statements import upsert_insert
from tether.shared.wire.runs import LostRunEvents

__all__ = [
    "MAX_LOST_SHOWN",
    "StreamState",
    "lost_events",
    "record_lost",
    "record_stored",
    "stream_state",
    "stream_state_of",
    "stream_states",
]

#: Most lost seqs a stream's state lists (``lost_count`` counts them all).
MAX_LOST_SHOWN = 1000
#: Most distinct reasons a stream's state lists.
MAX_REASONS_SHOWN = 10


@dataclass(frozen=True)
class StreamState:
    """A run's stream of worker events as the control plane has it.

    Attributes:
        last_seq: the run's last seq (from its terminal event); None until that arrived.
        stored: distinct worker seqs stored.
        highest_seq: the highest seq stored (0: none).
        lost: seqs an agent reported lost and not stored since, ascending (at most
            :data:`MAX_LOST_SHOWN`).
        lost_count: how many such seqs there are.
        lost_reasons: why, as the agents said (distinct).
        complete_at: when every seq up to ``last_seq`` was stored (control-plane clock).
    """

    last_seq: int | None
    stored: int
    highest_seq: int
    lost: tuple[int, ...] = ()
    lost_count: int = 0
    lost_reasons: tuple[str, ...] = ()
    complete_at: float | None = None

    @property
    def complete(self) -> bool:
        """Whether every seq up to the run's last one is stored."""
        return self.last_seq is not None and self.stored >= self.last_seq

    @property
    def expected(self) -> int:
        """How many seqs the stream has as far as the control plane knows: up to the last
        one, or, before the terminal event arrived, up to the highest stored."""
        return self.last_seq if self.last_seq is not None else self.highest_seq

    @property
    def missing(self) -> int:
        """Seqs up to :attr:`expected` neither stored nor reported lost: still arriving."""
        return max(self.expected - self.stored - self.lost_count, 0)


def stream_state(
    *,
    last_seq: int | None,
    stored: int,
    highest_seq: int,
    lost: Iterable[tuple[int, str]] = (),
    complete_at: float | None = None,
) -> StreamState:
    """The state of a stream from what is stored: ``lost`` holds (seq, reason) of the seqs
    reported lost and not stored; those past the stream's end are not part of it."""
    kept = sorted((seq, reason) for seq, reason in lost if last_seq is None or seq <= last_seq)
    # Seqs past the highest stored, before the end is known, are part of the stream too.
    highest = max([highest_seq, *(seq for seq, _ in kept)]) if last_seq is None else highest_seq
    reasons = tuple(dict.fromkeys(reason for _, reason in kept))[:MAX_REASONS_SHOWN]
    return StreamState(
        last_seq=last_seq,
        stored=stored,
        highest_seq=highest,
        lost=tuple(seq for seq, _ in kept[:MAX_LOST_SHOWN]),
        lost_count=len(kept),
        lost_reasons=reasons,
        complete_at=complete_at,
    )


async def record_stored(
    session: AsyncSession,
    inserted: Mapping[str, int],
    ends: Mapping[str, int],
    now: float | None = None,
) -> None:
    """Add ``inserted`` (run id -> worker events this transaction really inserted) to the
    runs' stored counts, and ``ends`` (run id -> last seq, from a terminal event) to their
    last seqs; mark the streams that this makes complete."""
    run_ids = sorted(set(inserted) | set(ends))
    if not run_ids:
        return
    now = time.time() if now is None else now
    table = RunEventStream.__table__
    stmt = upsert_insert(session, table)
    old, new = table.c, stmt.excluded
    last = case(
        (new.last_seq.is_(None), old.last_seq),
        (or_(old.last_seq.is_(None), old.last_seq < new.last_seq), new.last_seq),
        else_=old.last_seq,
    )
    stored = old.stored + new.stored
    complete_at = case(
        (old.complete_at.is_not(None), old.complete_at),
        (and_(last.is_not(None), stored >= last), literal(now)),
        else_=None,
    )
    # The last time an upload stored one of the run's events (a re-sent batch is no news).
    stored_at = case((new.stored > 0, literal(now)), else_=old.stored_at)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id"],
        set_={
            "stored": stored,
            "last_seq": last,
            "complete_at": complete_at,
            "stored_at": stored_at,
        },
    )
    rows = []
    # In run id order, so two uploads of the same runs lock their rows in the same order.
    for run_id in run_ids:
        count, end = inserted.get(run_id, 0), ends.get(run_id)
        done = end is not None and count >= end
        rows.append(
            {
                "run_id": run_id,
                "stored": count,
                "last_seq": end,
                "complete_at": now if done else None,
                "stored_at": now if count else None,
            }
        )
    await session.execute(stmt, rows)


async def stream_states(session: AsyncSession, run_ids: Iterable[str]) -> dict[str, StreamState]:
    """The stream state of each of ``run_ids`` (a run with no worker event stored yet has
    an empty one)."""
    wanted = sorted(set(run_ids))
    if not wanted:
        return {}
    rows = (
        await session.execute(select(RunEventStream).where(RunEventStream.run_id.in_(wanted)))
    ).scalars()
    found = {row.run_id: row for row in rows}
    out: dict[str, StreamState] = {}
    for run_id in wanted:
        row = found.get(run_id)
        if row is not None and row.last_seq is not None and row.stored >= row.last_seq:
            out[run_id] = stream_state(
                last_seq=row.last_seq,
                stored=row.stored,
                highest_seq=row.last_seq,
                complete_at=row.complete_at,
            )
            continue
        highest = await session.scalar(
            select(func.max(RunEventRow.seq)).where(RunEventRow.run_id == run_id)
        )
        out[run_id] = stream_state(
            last_seq=row.last_seq if row else None,
            stored=row.stored if row else 0,
            highest_seq=highest or 0,
            lost=await lost_events(session, run_id),
        )
    return out


async def stream_state_of(session: AsyncSession, run_id: str) -> StreamState:
    """The stream state of one run."""
    return (await stream_states(session, [run_id]))[run_id]


async def lost_events(session: AsyncSession, run_id: str) -> list[tuple[int, str]]:
    """(seq, reason) of the seqs of ``run_id`` reported lost that are not stored."""
    stored = (
        select(RunEventRow.id)
        .where(RunEventRow.run_id == LostRunEvent.run_id, RunEventRow.seq == LostRunEvent.seq)
        .exists()
    )
    rows = await session.execute(
        select(LostRunEvent.seq, LostRunEvent.reason)
        .where(LostRunEvent.run_id == run_id, ~stored)
        .order_by(LostRunEvent.seq)
    )
    return [(seq, reason) for seq, reason in rows]


async def record_lost(session: AsyncSession, reports: Sequence[LostRunEvents]) -> tuple[int, int]:
    """Store reports of lost seqs (their runs must exist), idempotent on ``(run_id, seq)``
    (a seq reported again keeps its first reason).

    Returns:
        (reports that recorded some seq, reports whose every seq was recorded before).
    """
    rows = {
        (report.run_id, seq): {
            "run_id": report.run_id,
            "seq": seq,
            "reason": report.reason,
            "reported_at": report.reported_at,
        }
        for report in reports
        for seq in report.seqs
    }
    if not rows:
        return 0, len(reports)
    table = LostRunEvent.__table__
    stmt = (
        upsert_insert(session, table)
        .on_conflict_do_nothing(index_elements=["run_id", "seq"])
        .returning(table.c.run_id, table.c.seq)
    )
    ordered = [rows[key] for key in sorted(rows)]
    new = {(run_id, seq) for run_id, seq in (await session.execute(stmt, ordered)).all()}
    stored = sum(1 for r in reports if any((r.run_id, seq) in new for seq in r.seqs))
    return stored, len(reports) - stored

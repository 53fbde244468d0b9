"""Run status changes as run-status sensors see them: read from the run events.

A run's move to a status is the event that moved it (``RUN_FAILURE`` for FAILURE, and so
on: :data:`~tether.shared.wire.runs.STATUS_FOR_EVENT`); the event's id orders the changes
and is a sensor's cursor. Only the first event of a type per run counts (a worker's
RUN_FAILURE after the monitor's is not a second failure), and an event for a terminal
status counts only if the run really ended so (an event whose move the state machine
refused, e.g. RUN_CANCELED after SUCCESS, changed nothing).

On PostgreSQL ids are handed out before commit, so an upload that commits after a
later-numbered one could land behind a cursor that already passed it (SQLite serializes
writers, so there it cannot). :class:`EventHorizon` closes the gap: a sensor reads only up
to an id that is *settled*, the newest id of an earlier snapshot all of whose writing
transactions have ended since (so every lower id is committed or never will be). Worker
uploads take their transaction id before their first event id
(:func:`tether.controlplane.store.runs.store_events`), so none can hold an id unseen by
that snapshot; a control-plane event's transaction takes its id in the same INSERT, and
would have to stay open from that instant past the next pass (a second later) to slip by.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, false, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from tether.controlplane.db.models import Run, RunEventRow
from tether.shared.wire.runs import STATUS_FOR_EVENT, EventType, RunStatus
from tether.shared.wire.snapshots import RunStatusSensorSnapshot
from tether.shared.wire.work import RunStatusRecord


@dataclass(frozen=True)
class StatusChanges:
    """A batch of status changes and the cursor to keep once a sensor has seen them.

    Attributes:
        records: the changes after the cursor, oldest first (at most the batch's limit).
        cursor: the id of the last change read; when the batch was not full, the newest
            event id there was, so changes outside the sensor's scope are not read again.
    """

    records: list[RunStatusRecord]
    cursor: int


async def newest_event_id(session: AsyncSession) -> int:
    """The id of the newest run event (0: none)."""
    return int(await session.scalar(select(func.max(RunEventRow.id))) or 0)


#: The newest event id and the transactions in flight, in one snapshot (PostgreSQL).
_SNAPSHOT = text(
    "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, "
    "(SELECT coalesce(max(id), 0) FROM run_events) FROM pg_current_snapshot() AS s"
)


@dataclass
class EventHorizon:
    """The newest run event id below which no event can still appear (see the module doc).

    :meth:`advance` looks once per daemon pass: it notes the newest id and which
    transactions were writing (PostgreSQL's snapshot ``xmax``); once every one of those
    has ended (the oldest still in flight is at or past that ``xmax``), that id is
    settled. So an id settles one pass after it was newest, however busy the database
    (at once when nothing was writing); on SQLite, whose writers are serialized, the
    newest id is settled at once.

    Attributes:
        settled: the settled id (None: not known yet, read nothing).
    """

    settled: int | None = None
    _pending: tuple[int, int] | None = None

    async def advance(self, session: AsyncSession) -> int | None:
        """Look at the database once (in a read-only transaction); return :attr:`settled`."""
        if session.get_bind().dialect.name != "postgresql":
            self.settled = await newest_event_id(session)
            return self.settled
        xmin_text, xmax_text, newest = (await session.execute(_SNAPSHOT)).one()
        xmin, xmax = int(xmin_text), int(xmax_text)
        if xmin == xmax:
            # No transaction was writing: every id up to the newest is final now.
            self.settled, self._pending = max(self.settled or 0, int(newest)), None
            return self.settled
        if self._pending is not None and xmin >= self._pending[1]:
            self.settled = max(self.settled or 0, self._pending[0])
            self._pending = None
        if self._pending is None:
            self._pending = (int(newest), xmax)
        return self.settled


def _scope(
    watch: RunStatusSensorSnapshot, deployment_id: str, own_location: str
) -> ColumnElement[bool]:
    """Which runs a sensor watches: always of its deployment only."""
    in_deployment = Run.deployment_id == deployment_id
    if watch.monitor_all_locations:
        return in_deployment
    if not watch.monitored_jobs and not watch.monitored_locations:
        return and_(in_deployment, Run.location_name == own_location)
    watched: list[ColumnElement[bool]] = []
    if watch.monitored_locations:
        watched.append(Run.location_name.in_(watch.monitored_locations))
    watched.extend(
        and_(Run.location_name == (j.location_name or own_location), Run.job_name == j.job_name)
        for j in watch.monitored_jobs
    )
    return and_(in_deployment, or_(false(), *watched))


async def status_changes(
    session: AsyncSession,
    watch: RunStatusSensorSnapshot,
    *,
    deployment_id: str,
    own_location: str,
    after: int,
    limit: int,
    upto: int,
) -> StatusChanges:
    """The status changes ``watch`` covers with an event id above ``after``.

    Args:
        session: the metadata DB.
        watch: what the sensor watches.
        deployment_id: the sensor's deployment (no other deployment's run is seen).
        own_location: the sensor's location (where its jobs without a location are).
        after: the sensor's cursor.
        limit: at most this many records; the rest come with the next call.
        upto: the settled event id (:class:`EventHorizon`): nothing above it is read.
    """
    newest = max(after, upto)
    event_types = [str(e) for e, status in STATUS_FOR_EVENT.items() if status in watch.statuses]
    earlier = aliased(RunEventRow)
    first_of_its_type = ~(
        select(earlier.id)
        .where(
            earlier.run_id == RunEventRow.run_id,
            earlier.event_type == RunEventRow.event_type,
            earlier.id < RunEventRow.id,
        )
        .exists()
    )
    rows = (
        await session.execute(
            select(RunEventRow, Run)
            .join(Run, Run.id == RunEventRow.run_id)
            .where(
                RunEventRow.event_type.in_(event_types),
                RunEventRow.id > after,
                RunEventRow.id <= newest,
                _scope(watch, deployment_id, own_location),
                first_of_its_type,
            )
            .order_by(RunEventRow.id)
            .limit(limit)
        )
    ).all()
    failed_steps = await _first_step_failures(
        session, [run.id for event, run in rows if event.event_type == EventType.RUN_FAILURE]
    )
    records = [
        record
        for event, run in rows
        if (record := _record(event, run, failed_steps.get(run.id))) is not None
    ]
    cursor = rows[-1][0].id if len(rows) == limit else newest
    return StatusChanges(records=records, cursor=max(cursor, after))


async def _first_step_failures(session: AsyncSession, run_ids: list[str]) -> dict[str, str]:
    """Per run, its first failed step and that step's error ("step: message")."""
    if not run_ids:
        return {}
    rows = await session.execute(
        select(RunEventRow.run_id, RunEventRow.step_key, RunEventRow.error, RunEventRow.message)
        .where(
            RunEventRow.run_id.in_(run_ids),
            RunEventRow.event_type == str(EventType.STEP_FAILURE),
        )
        .order_by(RunEventRow.id)
    )
    found: dict[str, str] = {}
    for run_id, step_key, error, message in rows:
        if run_id not in found:
            detail = (error or {}).get("message") or message
            found[run_id] = f"{step_key}: {detail}" if step_key else str(detail)
    return found


def _record(event: RunEventRow, run: Run, failed_step: str | None) -> RunStatusRecord | None:
    status = STATUS_FOR_EVENT[EventType(event.event_type)]
    if status.is_terminal and run.status != status:
        return None
    error_message = None
    if status in (RunStatus.FAILURE, RunStatus.CANCELED):
        # The run's own error (or the message of its end), then what its first failed
        # step raised: "Steps failed: load. load: ValueError: ..." says which and why.
        parts = [str((event.error or {}).get("message") or event.message or "")]
        if failed_step:
            parts.append(failed_step)
        error_message = " ".join(p for p in parts if p) or None
    return RunStatusRecord(
        seq=event.id,
        run_id=run.id,
        status=status,
        job_name=run.job_name,
        location_name=run.location_name,
        repository_name=run.repository_name,
        tags=dict(run.tags),
        error_message=error_message,
        changed_timestamp=event.timestamp,
        start_timestamp=run.started_at,
        end_timestamp=run.ended_at,
    )


def as_cursor(cursor: str | None) -> int | None:
    """A run-status sensor's stored cursor as an event id (None: none, or not one of ours,
    e.g. left by a plain sensor of the same name: the sensor starts afresh)."""
    if cursor is None:
        return None
    try:
        value = int(cursor)
    except ValueError:
        return None
    return value if value >= 0 else None

"""Work items: enqueue them, lease them to agents (long-poll), and take their acks.

Leases make handing work to an agent safe against crashes: an item is CLAIMED with an
expiry; the agent acks it (DISPATCHED) once it is on its NATS; an item whose lease ran out
unacked is offered again, to any agent of the deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import ANY, Database, changes
from tether.controlplane.db.models import WorkItemRow
from tether.controlplane.queue.worksignal import RUN_QUEUE_CHANNEL, PostgresWorkSignal
from tether.controlplane.store import runs, workitems
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import DEFAULT_AGENT_QUEUE, LocationConfig
from tether.shared.wire.work import WorkItem, WorkKind
from tether.shared.wire.workspecs import WORK_SPECS

#: Commit topic (:func:`~tether.controlplane.db.engine.changes`): work items were enqueued,
#: keyed by :func:`work_key`.
WORK_QUEUED = "work queued"


def work_key(deployment_id: str, substrate: str, agent_queue: str) -> str:
    """The key of work enqueued for (deployment, substrate, agent queue): which claims it
    wakes."""
    return json.dumps([deployment_id, substrate, agent_queue], separators=(",", ":"))


@dataclass(eq=False)
class _Waiter:
    """A claim waiting for work: what it may take, and the event that wakes it."""

    keys: frozenset[str]
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def of(cls, deployment_id: str, substrates: Iterable[str], queues: Iterable[str]) -> _Waiter:
        queues = tuple(queues)
        return cls(frozenset(work_key(deployment_id, s, q) for s in substrates for q in queues))

    def wants(self, keys: frozenset[str]) -> bool:
        return ANY in keys or not self.keys.isdisjoint(keys)


def results_topic(kind: str) -> str:
    """Commit topic: results of work items of ``kind`` were stored."""
    return f"results of {kind}"


def to_work_item(row: WorkItemRow) -> WorkItem:
    """The wire form of a work item row."""
    return WorkItem(
        id=row.id,
        kind=WorkKind(row.kind),
        location=LocationConfig.model_validate(row.location),
        payload=row.payload,
        traceparent=row.traceparent,
        created_at=row.created_at,
        expires_at=row.expires_at,
        attempt=max(row.attempts, 1),
        deployment=row.deployment_id,
    )


class WorkQueue:
    """The work items of every deployment, with wake-ups for long-polling claims.

    A commit that enqueued work wakes this process's waiting claims at once, those that
    could take it (of its deployment, substrate and agent queue). On PostgreSQL it also
    NOTIFYs the other control plane replicas of the database, naming the same, whose
    listeners wake theirs (:mod:`tether.controlplane.queue.worksignal`); on SQLite there is
    one process per database. The periodic recheck (for expired leases) also covers a lost
    notification.

    Args:
        db: the metadata DB.
        recheck_s: how often a waiting claim rechecks the DB (for leases that expired).

    Attributes:
        recheck_s: as above; may be changed while serving.
        hold_launches: new runs stay QUEUED without a ``launch_run`` item; the run
            coordinator dispatches them within the concurrency limits.
    """

    def __init__(self, db: Database, *, recheck_s: float = 1.0) -> None:
        self._db = db
        self.recheck_s = recheck_s
        self.hold_launches = False
        self._waiters: set[_Waiter] = set()
        self._closed = False
        self._results: dict[str, asyncio.Event] = {}
        db.watch_keys(WORK_QUEUED, self._committed)
        self.signal: PostgresWorkSignal | None = None
        self.run_queue_signal: PostgresWorkSignal | None = None
        if not db.is_sqlite:
            self.signal = PostgresWorkSignal(db.url, db.engine, self.notify)
            # Runs queued or ended here wake the run coordinator wherever it runs.
            self.run_queue_signal = PostgresWorkSignal(
                db.url,
                db.engine,
                lambda _keys: db.announce(runs.RUN_QUEUE_CHANGED),
                channel=RUN_QUEUE_CHANNEL,
            )
            db.watch(runs.RUN_QUEUE_CHANGED, self._run_queue_committed)

    def _run_queue_committed(self) -> None:
        signal = self.run_queue_signal
        # Only this process's own commits: its listener announces the others' (and its
        # own, again: a second wake of the coordinator is harmless).
        if signal is not None and not signal.announcing:
            signal.publish()

    def start(self) -> None:
        """Start listening for other replicas' work and run-queue changes (PostgreSQL);
        call in the event loop."""
        for signal in (self.signal, self.run_queue_signal):
            if signal is not None:
                signal.start()

    async def aclose(self) -> None:
        """Release waiting claims and stop listening."""
        self.close()
        for signal in (self.signal, self.run_queue_signal):
            if signal is not None:
                await signal.close()

    @property
    def waiting(self) -> int:
        """How many claims are currently waiting for work."""
        return len(self._waiters)

    def notify(self, keys: Collection[str] = (ANY,)) -> None:
        """Wake the waiting claims that could take work of ``keys`` (:func:`work_key`;
        :data:`ANY`: every claim)."""
        wanted = frozenset(keys)
        for waiter in self._waiters:
            if waiter.wants(wanted):
                waiter.event.set()

    def close(self) -> None:
        """Make waiting and future claims return at once (server shutting down)."""
        self._closed = True
        self.notify()

    def enqueue(
        self,
        session: AsyncSession,
        *,
        deployment_id: str,
        kind: WorkKind,
        location: LocationConfig,
        payload: BaseModel | None = None,
        traceparent: str | None = None,
        expires_at: float | None = None,
        item_id: str | None = None,
    ) -> str:
        """Add a PENDING work item to ``session``'s transaction; return its id.

        Waiting claims are woken when (and only if) that transaction commits.
        ``item_id`` names the item when others must find it (else a random id).
        ``payload`` is the kind's payload model (None: ``{}``, for kinds that need none).

        Raises:
            TypeError: ``payload`` is the payload model of another kind.
        """
        item_id = item_id or new_id()
        workitems.add_item(
            session,
            item_id=item_id,
            deployment_id=deployment_id,
            kind=kind,
            location=location,
            payload={} if payload is None else WORK_SPECS[kind].payload_json(payload),
            traceparent=traceparent,
            expires_at=expires_at,
        )
        changes(
            session, WORK_QUEUED, work_key(deployment_id, location.substrate, location.agent_queue)
        )
        return item_id

    async def enqueue_if_absent(
        self,
        session: AsyncSession,
        *,
        item_id: str,
        deployment_id: str,
        kind: WorkKind,
        location: LocationConfig,
        payload: BaseModel | None = None,
        traceparent: str | None = None,
        expires_at: float | None = None,
    ) -> bool:
        """Like :meth:`enqueue` with a given id, but leave an existing item of that id
        alone (another control plane queued it, perhaps in a transaction still open);
        return whether this call added it."""
        row = workitems.new_item_row(
            item_id=item_id,
            deployment_id=deployment_id,
            kind=kind,
            location=location,
            payload={} if payload is None else WORK_SPECS[kind].payload_json(payload),
            traceparent=traceparent,
            expires_at=expires_at,
        )
        added = await workitems.insert_item_if_absent(session, row)
        if added:
            changes(session, WORK_QUEUED, work_key(deployment_id, row.substrate, row.agent_queue))
        return added

    def watch_results(self, kinds: Iterable[str], callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the event loop) whenever results of ``kinds`` are committed.

        How a daemon waiting for an evaluation learns at once that its result is in. A hint
        only: results stored through another control plane replica call nobody here.
        """
        for kind in kinds:
            self._db.watch(results_topic(str(kind)), callback)

    def results_stored(self, session: AsyncSession, kinds: Iterable[str]) -> None:
        """Call the watchers of ``kinds`` once ``session``'s transaction commits."""
        for kind in kinds:
            changes(session, results_topic(str(kind)))

    def results_signal(self, kind: str) -> asyncio.Event:
        """An event set once the next commit storing results of ``kind`` in this process
        is done: how a request waiting for an agent's answer learns at once that it is in.

        Capture it *before* looking for the result (as :meth:`claim` does with its own
        signal), so a commit between the look and the wait still wakes the waiter. A hint
        only, like :meth:`watch_results`: results stored through another replica set it not.
        """
        kind = str(kind)
        if kind not in self._results:
            self._results[kind] = asyncio.Event()
            self.watch_results([kind], lambda: self._results_committed(kind))
        return self._results[kind]

    def _results_committed(self, kind: str) -> None:
        # Swapped like notify(): every waiter holds the event of the commit it waits for.
        event, self._results[kind] = self._results[kind], asyncio.Event()
        event.set()

    def _committed(self, keys: frozenset[str]) -> None:
        self.notify(keys)
        if self.signal is not None:
            self.signal.publish(keys)

    async def claim(
        self,
        *,
        deployment_id: str,
        agent_id: str,
        substrates: Sequence[str],
        max_items: int,
        wait_s: float,
        lease_s: float,
        queues: Sequence[str] = (DEFAULT_AGENT_QUEUE,),
    ) -> list[WorkItem]:
        """Lease up to ``max_items`` claimable items, waiting up to ``wait_s`` for some.

        Claimable: PENDING, or CLAIMED with an expired lease; of one of ``substrates`` and
        one of the agent ``queues``; not past its ``expires_at``.
        """
        deadline = time.monotonic() + wait_s
        waiter = _Waiter.of(deployment_id, substrates, queues)
        self._waiters.add(waiter)
        try:
            while True:
                # Cleared *before* the DB look: a commit between the look and the wait
                # still wakes this claim.
                waiter.event.clear()
                items = await self._claim_once(
                    deployment_id, agent_id, substrates, queues, max_items, lease_s
                )
                remaining = deadline - time.monotonic()
                if items or remaining <= 0 or self._closed:
                    return items
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self.recheck_s, remaining)):
                        await waiter.event.wait()
        finally:
            self._waiters.discard(waiter)

    async def _claim_once(
        self,
        deployment_id: str,
        agent_id: str,
        substrates: Sequence[str],
        queues: Sequence[str],
        max_items: int,
        lease_s: float,
    ) -> list[WorkItem]:
        if not substrates or not queues or max_items <= 0:
            return []
        async with self._db.transaction() as session:
            rows = await workitems.claim_items(
                session,
                deployment_id=deployment_id,
                agent_id=agent_id,
                substrates=substrates,
                queues=queues,
                max_items=max_items,
                lease_s=lease_s,
                now=time.time(),
            )
            return [to_work_item(row) for row in rows]

    async def ack(self, *, deployment_id: str, agent_id: str, ids: Sequence[str]) -> int:
        """Mark items this agent leased as DISPATCHED; return how many were."""
        if not ids:
            return 0
        async with self._db.transaction() as session:
            return await workitems.ack_items(
                session, deployment_id=deployment_id, agent_id=agent_id, ids=ids
            )

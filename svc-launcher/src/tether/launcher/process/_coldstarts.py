"""Bounding how many cold run workers start at once (process substrate).

A cold run worker spends its first seconds starting an interpreter and importing the SDK
and the location's code: 1-2 s of CPU each. A storm of launches that spawned every one
at once would starve the machine (and every worker would start slower than one after
the other). :class:`ColdStartGate` lets at most ``limit`` workers be *starting* at once;
runs in flight are not limited. A worker counts as started once it published its first
run event (it has imported everything by then), once it exited, or after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.subscription import Subscription
from tether.launcher.substrate import RunStartSignal, StartWatch
from tether.shared.nats import subjects

log = logging.getLogger(__name__)


class _NatsStartWatch:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.sub: Subscription | None = None

    async def started(self) -> None:
        await self.event.wait()

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


class NatsRunStarts:
    """A run worker has started when its first event appears on ``tether.events.<run>``.

    A plain (core NATS) subscription sees what the worker publishes to its JetStream
    stream, without consuming anything.

    Args:
        nc: the launcher's NATS connection.
    """

    def __init__(self, nc: nats.NATS) -> None:
        self._nc = nc

    async def watch(self, run_id: str) -> StartWatch:
        """Subscribe to the run's events; the watch fires on the first one."""
        watch = _NatsStartWatch()

        async def on_event(_msg: object) -> None:
            watch.event.set()

        watch.sub = await self._nc.subscribe(subjects.events(run_id), cb=on_event, max_msgs=1)
        return watch


class ColdStartGate:
    """At most ``limit`` cold run workers starting at once.

    Args:
        limit: workers allowed to be starting at the same time.
        timeout_s: longest a worker counts as starting (its slot is freed then anyway).
        signal: how a worker's start is noticed; None: only its exit or the timeout end
            its start (so, without a signal, the gate bounds short runs as a whole).
    """

    def __init__(
        self, limit: int, *, timeout_s: float = 60.0, signal: RunStartSignal | None = None
    ) -> None:
        self.limit = limit
        self.signal = signal
        self._timeout = timeout_s
        self._slots = asyncio.Semaphore(limit)
        self._holds: set[asyncio.Task[None]] = set()
        #: Workers starting now, and the most ever seen at once.
        self.starting = 0
        self.peak = 0

    async def acquire(self, run_id: str) -> StartWatch | None:
        """Wait for a free slot; return the watch of ``run_id``'s start (if a signal is set).

        Call :meth:`hold` once the worker is spawned, or :meth:`release` if it was not.
        """
        await self._slots.acquire()
        self.starting += 1
        self.peak = max(self.peak, self.starting)
        if self.signal is None:
            return None
        try:
            return await self.signal.watch(run_id)
        except Exception as err:  # noqa: BLE001 - NATS trouble must not block launches
            log.warning("cannot watch the start of run %s: %r", run_id, err)
            return None

    def release(self, watch: StartWatch | None = None) -> None:
        """Free the slot (the worker started, ended, or was never spawned)."""
        self.starting -= 1
        self._slots.release()
        if watch is not None:
            task = asyncio.create_task(watch.close())
            self._holds.add(task)
            task.add_done_callback(self._holds.discard)

    def hold(self, exited: asyncio.Future[int], watch: StartWatch | None) -> None:
        """Keep the slot until the worker started (``watch``), exited, or timed out."""
        task = asyncio.create_task(self._hold(exited, watch))
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    async def _hold(self, exited: asyncio.Future[int], watch: StartWatch | None) -> None:
        waits: set[asyncio.Future[object]] = {exited}  # type: ignore[arg-type]
        if watch is not None:
            waits.add(asyncio.ensure_future(watch.started()))
        try:
            await asyncio.wait(waits, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            self.release(watch)

    async def aclose(self) -> None:
        """Stop holding slots (the workers run on)."""
        for task in list(self._holds):
            task.cancel()
        await asyncio.gather(*self._holds, return_exceptions=True)

"""The launcher's durable pull consumer of work items, with bounded concurrency per kind group."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
import stamina
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from tether.launcher.handlers import WorkHandlers
from tether.launcher.publishing import Publisher
from tether.launcher.settings import LauncherSettings
from tether.shared.nats import subjects
from tether.shared.nats.streams import fetch_ready, jetstream_call
from tether.shared.nats.subjects import Stream
from tether.shared.nats.workgate import WorkGate
from tether.shared.runtime import telemetry
from tether.shared.wire.base import decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.work import WorkItem
from tether.shared.wire.workspecs import WORK_SPECS, SlotGroup

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_S = 5.0


def consumer_name(substrate: str) -> str:
    """Durable consumer shared by every launcher replica of ``substrate``."""
    return f"launcher-{subjects.token(substrate)}"


class WorkConsumer:
    """Fetches work items in batches and handles them concurrently.

    One semaphore of ``max_concurrency`` per slot group (:class:`SlotGroup`; each kind's
    group is in its spec: launches, terminations and health checks, sensor evaluations,
    other code-server kinds) keeps a slow code server or sensor from delaying run
    launches, launches waiting for a cold-start slot from delaying terminations, and a
    slow sensor from delaying schedules. At most that many times ``max_concurrency``
    messages are fetched and unfinished at once; each is kept alive with ``in_progress()``.

    Args:
        js: JetStream context.
        settings: launcher settings.
        handlers: the work handlers.
        publisher: used for dead letters.
        gate: verifies each item (signature, deployment, expiry, replay) before it is
            handled; a refused item is dead-lettered with the reason.
    """

    def __init__(
        self,
        js: JetStreamContext,
        settings: LauncherSettings,
        handlers: WorkHandlers,
        publisher: Publisher,
        gate: WorkGate,
    ) -> None:
        self._js = js
        self._gate = gate
        self._settings = settings
        self._handlers = handlers
        self._publisher = publisher
        self._slots = {group: asyncio.Semaphore(settings.max_concurrency) for group in SlotGroup}
        self._capacity = len(self._slots) * settings.max_concurrency
        self._free = asyncio.Semaphore(self._capacity)
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Fetch and dispatch messages until cancelled (in-flight handlers keep going)."""
        s = self._settings
        # Create or update: a changed ack_wait/max_deliver takes effect on restart
        # (pull_subscribe would silently bind to the old configuration).
        config = ConsumerConfig(
            durable_name=consumer_name(s.substrate),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait_s,
            max_deliver=s.max_deliver,
            filter_subject=subjects.work_filter(s.substrate),
        )
        what = f"declaring consumer {config.durable_name}"
        await jetstream_call(lambda: self._js.add_consumer(str(Stream.WORK), config), what)
        sub = await jetstream_call(
            lambda: self._js.pull_subscribe_bind(consumer_name(s.substrate), str(Stream.WORK)),
            f"binding consumer {config.durable_name}",
        )
        log.info(
            "consuming %s as %s", subjects.work_filter(s.substrate), consumer_name(s.substrate)
        )
        try:
            while True:
                # Fetch only as many messages as there are free slots, so nothing fetched
                # sits unhandled long enough to be redelivered to another replica.
                await self._free.acquire()
                want = 1
                while want < self._capacity and not self._free.locked():
                    await self._free.acquire()
                    want += 1
                try:
                    msgs = await self._fetch(sub, want)
                except BaseException:
                    for _ in range(want):
                        self._free.release()
                    raise
                for _ in range(want - len(msgs)):
                    self._free.release()
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
        finally:
            # A fetch cancelled mid-flight leaves its inbox subscription with a pending
            # queue nobody consumes: connection drain would wait for it (30 s) at exit.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._free.release()

    async def _fetch(self, sub: JetStreamContext.PullSubscription, want: int) -> list[Msg]:
        async for attempt in stamina.retry_context(
            on=lambda exc: isinstance(exc, nats.errors.Error),
            attempts=None,
            timeout=None,
            wait_initial=0.5,
            wait_max=5.0,
        ):
            with attempt:
                try:
                    return await fetch_ready(sub, want, _FETCH_TIMEOUT_S)
                except TimeoutError:
                    # Nothing to fetch. nats-py raises its own TimeoutError or, on some
                    # paths, the builtin one; both are TimeoutError.
                    return []
        return []  # pragma: no cover - the retry loop only ends by returning or raising

    async def drain(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for in-flight handlers; cancel the rest (redelivered later)."""
        if not self._inflight:
            return
        log.info("waiting for %d in-flight work item(s)", len(self._inflight))
        _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _handle(self, msg: Msg) -> None:
        keepalive = asyncio.create_task(self._keep_alive(msg))
        try:
            await self._handle_once(msg)
        except asyncio.CancelledError:
            # Shutdown timed out: hand the message back now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as err:  # noqa: BLE001 - any failure fails this one message
            await self._failed(msg, err)
        finally:
            keepalive.cancel()

    async def _handle_once(self, msg: Msg) -> None:
        try:
            item = decode(msg.data, WorkItem)
        except ContractError as err:
            await self._publisher.dead_letter(msg, f"malformed work item: {err}")
            await msg.term()
            return
        try:
            # Before anything acts on it (a replay check failing on NATS is retried).
            await self._gate.check(msg, item)
        except ContractError as err:  # WorkRefusedError, or an unroutable item
            await self._publisher.dead_letter(msg, f"refused work item: {err}")
            await msg.term()
            return
        group = WORK_SPECS[item.kind].slots
        if group is None:
            # Unreachable past the gate (such kinds are routed outside launcher filters).
            await self._publisher.dead_letter(
                msg, f"refused work item: no launcher serves {item.kind}"
            )
            await msg.term()
            return
        async with self._slots[group]:
            ctx = telemetry.context_from_headers(msg.headers)
            with telemetry.tracer("tether.launcher").start_as_current_span(
                f"launcher.{item.kind}",
                context=ctx,
                attributes={"work_item_id": item.id, "location": item.location.name},
            ):
                await self._handlers.handle(item)
        await msg.ack()

    async def _failed(self, msg: Msg, err: Exception) -> None:
        delivered = msg.metadata.num_delivered
        if delivered < self._settings.max_deliver:
            log.warning("work message failed (delivery %d), retrying: %r", delivered, err)
            with contextlib.suppress(Exception):
                await msg.nak(delay=min(2.0**delivered, 30.0))
            return
        # Last delivery: park it in the dead letters instead of dropping it silently.
        try:
            await self._publisher.dead_letter(
                msg, f"failed on delivery {delivered} of {self._settings.max_deliver}: {err!r}"
            )
        except Exception:
            log.exception("could not dead-letter a failed work message; dropping it")
        with contextlib.suppress(Exception):
            await msg.term()

    async def _keep_alive(self, msg: Msg) -> None:
        # Handlers may wait for a slot, a starting code server or a missing results stream
        # longer than ack_wait; tell JetStream we are still on it.
        interval = max(self._settings.ack_wait_s / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

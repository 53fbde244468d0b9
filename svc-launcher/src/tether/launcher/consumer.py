"""The launcher's durable pull consumer of work items, on FastStream, with manual acks and
bounded concurrency per kind group.

The subscriber is FastStream's JetStream pull subscriber (``pull_sub``, ``max_workers``)
on ``tether.work.<substrate>.>``, bound to the durable consumer ``launcher-<substrate>``
that every replica shares. Acknowledgement is manual (``AckPolicy.MANUAL``): FastStream
neither acks nor rejects by itself; :class:`WorkAcks`, a consume middleware, does it for
each message after the handler:

- handled: ``ack``;
- malformed body or refused by the :class:`~tether.shared.nats.workgate.WorkGate`: dead
  letter, then ``term`` (never redelivered);
- failed: ``nak`` with backoff while deliveries remain, dead letter and ``term`` on the last;
- cancelled (shutdown past its grace): ``nak`` at once, rather than after ``ack_wait``;
- all the while ``in_progress`` every third of ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker, NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.subscriber.usecases import LogicSubscriber
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig
from tether.launcher.domains import NotOwnerError
from tether.launcher.handlers import ClaimHeldError, WorkHandlers
from tether.launcher.publishing import Publisher
from tether.launcher.settings import LauncherSettings
from tether.shared.nats import subjects
from tether.shared.nats.broker import bound_stream
from tether.shared.nats.streams import jetstream_call
from tether.shared.nats.subjects import Stream
from tether.shared.nats.workgate import WorkGate
from tether.shared.runtime import telemetry
from tether.shared.wire.base import decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.work import WorkItem
from tether.shared.wire.workspecs import WORK_SPECS, SlotGroup

log = logging.getLogger(__name__)

#: How long one pull request waits for a message before the next one is sent.
FETCH_TIMEOUT_S = 5.0


def consumer_name(substrate: str) -> str:
    """Durable consumer shared by every launcher replica of ``substrate``."""
    return f"launcher-{subjects.token(substrate)}"


def consumer_config(settings: LauncherSettings) -> ConsumerConfig:
    """The durable consumer of ``settings``' substrate (explicit acks, its limits)."""
    return ConsumerConfig(
        durable_name=consumer_name(settings.substrate),
        ack_policy=JsAckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        filter_subject=subjects.work_filter(settings.substrate),
    )


class HandBackError(Exception):
    """A work message to look at again (another launcher must handle it, or later):
    ``nak`` it without counting a failure, redelivered after ``delay_s`` (None: the
    hand-back delay of the settings)."""

    def __init__(self, message: str, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class DeadLetterError(ContractError):
    """A work message that must not be redelivered: dead-letter it with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_work_item(message: StreamMessage[Any]) -> WorkItem:
    """FastStream decoder of work messages: the typed WorkItem, or a dead letter.

    Raises:
        DeadLetterError: the body is no work item.
    """
    try:
        return decode(message.body, WorkItem)
    except ContractError as err:
        raise DeadLetterError(f"malformed work item: {err}") from err


class WorkConsumer:
    """Handles the work items of the launcher's substrate concurrently.

    One semaphore of ``max_concurrency`` per slot group (:class:`SlotGroup`; each kind's
    group is in its spec: launches, terminations and health checks, sensor evaluations,
    other code-server kinds) keeps a slow code server or sensor from delaying run
    launches, launches waiting for a cold-start slot from delaying terminations, and a
    slow sensor from delaying schedules. FastStream's ``max_workers`` is all groups'
    slots together: that many messages are in handlers (waiting for their group's slot,
    kept alive, or handled) at once.

    Over-fetch: the subscriber pulls one message at a time (``PullSub(batch_size=1)``),
    and only the message pulled while every worker is busy waits outside a handler (no
    keepalive) for the first worker to free up. Should that take longer than
    ``ack_wait``, JetStream hands it to another replica; the WorkGate admits such a
    redelivery (same stream message) and handling is idempotent (run claims, result ids).

    Args:
        settings: launcher settings.
        handlers: the work handlers.
        publisher: used for dead letters.
        gate: verifies each item (signature, deployment, expiry, replay) before it is
            handled; a refused item is dead-lettered with the reason.
    """

    def __init__(
        self,
        settings: LauncherSettings,
        handlers: WorkHandlers,
        publisher: Publisher,
        gate: WorkGate,
    ) -> None:
        self._gate = gate
        self._settings = settings
        self._handlers = handlers
        self._publisher = publisher
        self._slots = {group: asyncio.Semaphore(settings.max_concurrency) for group in SlotGroup}
        self.capacity = len(self._slots) * settings.max_concurrency
        self.handback_delay_s = settings.handback_delay_s

    async def declare(self, js: JetStreamContext) -> None:
        """Create or update the durable consumer: a changed ``ack_wait``/``max_deliver``
        takes effect on restart (binding alone would keep the old configuration)."""
        config = consumer_config(self._settings)
        await jetstream_call(
            lambda: js.add_consumer(str(Stream.WORK), config),
            f"declaring consumer {config.durable_name}",
        )

    def subscribe(self, broker: NatsBroker, *, inbox_prefix: bytes) -> LogicSubscriber[Any]:
        """Declare the work subscriber on ``broker`` (it starts with the broker).

        Args:
            broker: the launcher's broker.
            inbox_prefix: where pull replies go (the launcher user's own inbox).
        """
        s = self._settings
        router = NatsRouter(middlewares=(self._acks,))
        subscriber = router.subscriber(
            subjects.work_filter(s.substrate),
            stream=bound_stream(Stream.WORK),
            durable=consumer_name(s.substrate),
            config=consumer_config(s),
            pull_sub=PullSub(batch_size=1, timeout=FETCH_TIMEOUT_S),
            inbox_prefix=inbox_prefix,
            max_workers=self.capacity,
            ack_policy=AckPolicy.MANUAL,
            decoder=decode_work_item,
            title=f"work of the {s.substrate} substrate (consumed by launcher)",
        )
        subscriber(self.handle)
        broker.include_router(router)
        return subscriber

    def _acks(self, msg: Any, /, *, context: Any) -> WorkAcks:
        return WorkAcks(msg, context=context, consumer=self)

    async def handle(self, item: WorkItem, message: NatsMessage) -> None:
        """Handle one verified work item in its slot group, in a span that continues the
        trace of the message's ``traceparent`` (the poller's span).

        Raises:
            DeadLetterError: the gate refused the item.
        """
        raw: Msg = message.raw_message
        try:
            # Before anything acts on it (a replay check failing on NATS is retried).
            await self._gate.check(raw, item)
        except ContractError as err:  # WorkRefusedError, or an unroutable item
            raise DeadLetterError(f"refused work item: {err}") from err
        group = WORK_SPECS[item.kind].slots
        if group is None:
            # Unreachable past the gate (such kinds are routed outside launcher filters).
            raise DeadLetterError(f"refused work item: no launcher serves {item.kind}")
        async with self._slots[group]:
            ctx = telemetry.context_from_headers(raw.headers)
            with telemetry.tracer("tether.launcher").start_as_current_span(
                f"launcher.{item.kind}",
                context=ctx,
                attributes={"work_item_id": item.id, "location": item.location.name},
            ):
                try:
                    await self._handlers.handle(item)
                except NotOwnerError as err:
                    # Another domain's run: hand the message back for a launcher of that
                    # domain (the replicas share the consumer); on the last delivery say
                    # "unknown, not mine" so the control plane knows (never "dead").
                    if raw.metadata.num_delivered < self._settings.max_deliver:
                        raise HandBackError(str(err)) from err
                    await self._handlers.answer_not_owner(item, err)
                except ClaimHeldError as err:
                    # Its claimer lives: look again once a dead one's heartbeat would have
                    # expired (then the claim is taken over); on the last delivery, leave
                    # it to the claimer (and to the control plane's run monitor).
                    if raw.metadata.num_delivered < self._settings.max_deliver:
                        raise HandBackError(str(err), self._settings.heartbeat_ttl_s) from err
                    log.warning("leaving launch %s to its claimer: %s", item.id, err)

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Park ``msg`` in the dead letters, then ``term`` it (never redelivered)."""
        await self._publisher.dead_letter(msg, reason)
        await msg.term()

    async def failed(self, msg: Msg, err: Exception) -> None:
        """``nak`` ``msg`` with backoff, or dead-letter it on its last delivery."""
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

    async def keep_alive(self, msg: Msg) -> None:
        """``in_progress`` every third of ``ack_wait`` until cancelled."""
        # Handlers may wait for a slot, a starting code server or a missing results stream
        # longer than ack_wait; tell JetStream we are still on it.
        interval = max(self._settings.ack_wait_s / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()


class WorkAcks(BaseMiddleware):
    """The manual acknowledgement of one work message (see the module's docstring).

    Wraps decoding too (FastStream decodes inside the consume scope), so a malformed body
    reaches :meth:`consume_scope` as a :class:`DeadLetterError`.
    """

    def __init__(self, msg: Any, /, *, context: Any, consumer: WorkConsumer) -> None:
        super().__init__(msg, context=context)
        self._consumer = consumer

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        """Handle ``msg``, then ack, nak or term it; never raises but for cancellation."""
        raw: Msg = msg.raw_message
        consumer = self._consumer
        keepalive = asyncio.create_task(consumer.keep_alive(raw))
        try:
            await call_next(msg)
            await raw.ack()
        except asyncio.CancelledError:
            # Shutdown timed out: hand the message back now rather than after ack_wait
            # (shielded: the cancelled task group would cancel the nak too).
            with contextlib.suppress(Exception):
                await asyncio.shield(raw.nak())
            raise
        except HandBackError as err:
            log.debug("handing back a work message: %s", err)
            delay = consumer.handback_delay_s if err.delay_s is None else err.delay_s
            with contextlib.suppress(Exception):
                await raw.nak(delay=delay)
        except DeadLetterError as err:
            try:
                await consumer.dead_letter(raw, err.reason)
            except Exception as failure:  # noqa: BLE001 - redelivered, dead-lettered again
                await consumer.failed(raw, failure)
        except Exception as err:  # noqa: BLE001 - any failure fails this one message
            await consumer.failed(raw, err)
        finally:
            keepalive.cancel()
        return None

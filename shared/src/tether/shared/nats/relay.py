"""Batching relay from a JetStream pull consumer to an idempotent upload.

Used by the eventrelay (events, results) and the logship (compute logs). The shape:
fetch -> decode (malformed messages go to the dead letter, never looped) -> upload with
retries -> ack. Messages are acked only after the destination confirmed, so a crash
anywhere redelivers, and idempotent uploads make redelivery harmless.

Redelivery must be prompt, not only certain: a relay killed -9 with a batch in hand cannot
hand it back, so JetStream redelivers it after the consumer's ack wait, and with a minute
of ack wait runs ended SUCCESS while blocks of their events were still a minute away. So
the ack wait is a few seconds, and a relay keeps what it holds alive with in-progress acks
while it uploads (or waits for the destination to come back); a relay that stops or is
cancelled with messages in hand naks them, so a surviving replica takes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from tether.shared.nats.deadletter import dead_letter
from tether.shared.nats.streams import fetch_ready, jetstream_call, nats_unavailable
from tether.shared.nats.subjects import Stream
from tether.shared.runtime import metrics, telemetry
from tether.shared.runtime.telemetry import TRACEPARENT_HEADER
from tether.shared.wire.errors import AgentApiError, ContractError

log = logging.getLogger(__name__)

#: Seconds a relay waits before fetching again after JetStream answered it is unavailable
#: (a cluster electing a new leader).
_UNAVAILABLE_PAUSE_S = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    """When a batch is flushed.

    A fetch returns as soon as any message is available (light load: flushed within
    ``max_wait_s``); under heavy load it fills up to ``max_count`` messages, and an upload
    is split so that no request carries more than ``max_bytes`` of message bodies.

    ``ack_wait_s`` bounds how long the batch of a relay that died stays with it before
    JetStream gives it to another (held messages are extended every ``ack_wait_s / 4``
    while they are uploaded, so a slow upload is not redelivered meanwhile); failed
    uploads are retried with exponential backoff up to ``max_backoff_s`` between attempts,
    so a destination that comes back is used within about that long.
    """

    max_count: int = 500
    max_bytes: int = 4 << 20
    max_wait_s: float = 0.1
    ack_wait_s: float = 4.0
    max_ack_pending: int = 20_000
    max_backoff_s: float = 1.0

    @property
    def heartbeat_s(self) -> float:
        """Seconds between in-progress acks of the messages in hand."""
        return max(self.ack_wait_s / 4, 0.05)


@dataclass(frozen=True)
class RelaySpec(Generic[T]):
    """What one relay consumes and where it uploads.

    Attributes:
        name: span and log name, e.g. ``eventrelay.events``.
        stream: the source stream.
        durable: durable consumer name (shared by every replica: work-queue semantics).
        filter_subject: subjects consumed.
        decode: message -> item; raises ContractError when malformed.
        upload: uploads a batch idempotently; raises AgentApiError on refusal of the whole
            batch. It may return an outcome whose ``refused`` lists items refused on their
            own (``index`` in the batch, ``reason``): those are dead-lettered, the others
            acked.
        admit: checks each decoded message before it is uploaded (e.g. a work item's
            signature); raises ContractError to dead-letter it. None: no check.
    """

    name: str
    stream: Stream
    durable: str
    filter_subject: str
    decode: Callable[[Msg], T]
    upload: Callable[[Sequence[T]], Awaitable[object]]
    admit: Callable[[Msg, T], Awaitable[None]] | None = None


class _HandBack(Exception):  # noqa: N818 - a signal inside the relay, not an error
    """The relay stops while an upload fails: hand the batch back instead of retrying."""


class BatchRelay(Generic[T]):
    """Runs one RelaySpec until stopped."""

    def __init__(
        self, js: JetStreamContext, spec: RelaySpec[T], policy: BatchPolicy | None = None
    ) -> None:
        self._js = js
        self._spec = spec
        self._policy = policy or BatchPolicy()
        self._stopping = asyncio.Event()
        # Messages fetched and neither acked nor terminated yet, by id().
        self._held: dict[int, Msg] = {}

    def stop(self) -> None:
        """Finish the batch in hand (or, while its upload fails, hand it back to JetStream
        with a nak), then return from :meth:`run`."""
        self._stopping.set()

    def consumer_config(self) -> ConsumerConfig:
        """The durable consumer this relay declares."""
        spec, policy = self._spec, self._policy
        return ConsumerConfig(
            durable_name=spec.durable,
            filter_subject=spec.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=policy.ack_wait_s,
            max_ack_pending=policy.max_ack_pending,
        )

    async def run(self) -> None:
        """Consume, upload and ack until :meth:`stop`."""
        spec, policy = self._spec, self._policy
        config = self.consumer_config()
        # Create or update, then bind: pull_subscribe would bind to an existing consumer
        # as it is, keeping the ack wait of whichever version created it.
        await jetstream_call(
            lambda: self._js.add_consumer(str(spec.stream), config),
            f"declaring consumer {spec.durable}",
        )
        sub = await jetstream_call(
            lambda: self._js.pull_subscribe_bind(spec.durable, str(spec.stream)),
            f"binding consumer {spec.durable}",
        )
        try:
            first = await self._first_batch(sub)
            if first:
                await self.handle(first)
            while not self._stopping.is_set():
                msgs = await self._fetch(sub, policy.max_wait_s * 10)
                if msgs:
                    await self.handle(msgs)
        finally:
            # A fetch's inbox subscription left with a pending queue makes the connection's
            # drain wait its whole timeout (30 s) at exit; unsubscribing ends it at once.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _fetch(self, sub: JetStreamContext.PullSubscription, timeout: float) -> list[Msg]:
        """The next messages (:func:`fetch_ready`); none when nothing came within
        ``timeout`` or JetStream is unavailable for the moment.

        On a cluster, losing the node that led the stream or the consumer makes the others
        answer 503 to pulls until they have elected a new leader (a second or two); the
        relay waits that out, as it waits out a restart of a single server, rather than
        dying with the batch it would have stored.
        """
        try:
            return await fetch_ready(sub, self._policy.max_count, timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except nats.errors.Error as err:
            if not nats_unavailable(err):
                raise
            log.info("%s: JetStream unavailable (%r); fetching again shortly", self._spec.name, err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _UNAVAILABLE_PAUSE_S)
            return []

    async def _first_batch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """The first batch of a relay starting on a consumer with messages outstanding:
        everything fetched until all of them are in hand, in stream order.

        A relay killed -9 with a batch in hand leaves it unacked until its ack wait ends,
        and JetStream meanwhile hands out what came after it. Storing that first would
        store a run's terminal event, say, while a block of its events is still to come:
        the run would be seen ended with events missing. So the newer messages are held
        (kept in progress) until the old batch is redelivered, at most one ack wait, and
        the lot is stored oldest first. Messages a stopping relay nak'ed come back at
        once, so taking over from a graceful stop costs nothing.
        """
        spec, policy = self._spec, self._policy
        try:
            info = await self._js.consumer_info(str(spec.stream), spec.durable)
        except Exception as err:  # noqa: BLE001 - best effort: fetching will tell if NATS is gone
            log.debug("%s: no consumer info (%r); fetching at once", spec.name, err)
            return []
        if not info.num_ack_pending:
            return []
        # The outstanding messages are the ``num_ack_pending`` delivered up to here.
        last = info.delivered.stream_seq if info.delivered else 0
        outstanding = info.num_ack_pending
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.ack_wait_s + 0.5
        held: dict[int, Msg] = {}
        while not self._stopping.is_set():
            msgs = await self._fetch(sub, 0.5)
            # A message redelivered while held: its newest delivery is the one to ack.
            held.update((m.metadata.sequence.stream, m) for m in msgs)
            back = sum(1 for seq in held if seq <= last)
            if back >= outstanding or loop.time() >= deadline:
                break
            for msg in held.values():
                with contextlib.suppress(Exception):
                    await msg.in_progress()
        back = sum(1 for seq in held if seq <= last)
        if back < outstanding:
            log.warning(
                "%s: %d of %d outstanding message(s) did not come back within the ack wait",
                spec.name,
                outstanding - back,
                outstanding,
            )
        return [held[seq] for seq in sorted(held)]

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Decode, upload and ack one fetched batch.

        What is in hand is kept in progress meanwhile; whatever is still in hand when this
        fails, is cancelled or gives up because the relay stops is nak'ed, so it is
        redelivered at once rather than after the ack wait.
        """
        self._held.update((id(m), m) for m in msgs)
        heartbeat = asyncio.create_task(self._keep_in_progress())
        try:
            good: list[tuple[Msg, T]] = []
            for msg in msgs:
                try:
                    item = self._spec.decode(msg)
                    if self._spec.admit is not None:
                        await self._spec.admit(msg, item)
                    good.append((msg, item))
                except ContractError as err:
                    await self.dead_letter(msg, str(err))
            for chunk in self._split(good):
                await self._upload_batch(chunk)
        except _HandBack:
            log.info("%s: stopping; handing %d messages back", self._spec.name, len(self._held))
        finally:
            heartbeat.cancel()
            await self._hand_back()

    async def _keep_in_progress(self) -> None:
        """Extend the ack wait of the messages in hand until cancelled."""
        while True:
            await asyncio.sleep(self._policy.heartbeat_s)
            for msg in list(self._held.values()):
                try:
                    await msg.in_progress()
                except Exception as err:  # noqa: BLE001 - NATS away: it redelivers, harmless
                    log.debug("%s: in-progress ack failed: %r", self._spec.name, err)
                    break

    async def _hand_back(self) -> None:
        """Nak every message still in hand (JetStream redelivers it at once)."""
        held, self._held = list(self._held.values()), {}
        for msg in held:
            try:
                await msg.nak()
            except Exception as err:  # noqa: BLE001 - NATS away: redelivered after ack wait
                log.debug("%s: nak failed: %r", self._spec.name, err)
                return

    async def _settle(self, msg: Msg, *, term: bool = False) -> None:
        await (msg.term() if term else msg.ack())
        self._held.pop(id(msg), None)

    def _split(self, pairs: list[tuple[Msg, T]]) -> list[list[tuple[Msg, T]]]:
        """Split into sub-batches of at most ``max_bytes`` of bodies."""
        out: list[list[tuple[Msg, T]]] = []
        cur: list[tuple[Msg, T]] = []
        size = 0
        for pair in pairs:
            n = len(pair[0].data)
            if cur and size + n > self._policy.max_bytes:
                out.append(cur)
                cur, size = [], 0
            cur.append(pair)
            size += n
        if cur:
            out.append(cur)
        return out

    async def _upload_batch(self, pairs: list[tuple[Msg, T]]) -> None:
        # One upload for the batch whatever runs it holds (an upload per run made a relay
        # behind a backlog of 30 runs ~30x slower); its span is linked to each run's trace
        # and each trace gets a span of the hop (telemetry.batch_span).
        causes = [(msg.headers or {}).get(TRACEPARENT_HEADER) for msg, _ in pairs]
        with telemetry.batch_span(self._spec.name, causes, scope="tether.relay", count=len(pairs)):
            stored = await self._upload_until_done(pairs)
        for msg in stored:
            await self._settle(msg)

    async def _upload_until_done(self, pairs: list[tuple[Msg, T]]) -> list[Msg]:
        """Upload, retrying transient failures forever; bisect refusals to dead-letter.

        Returns the messages that were stored (the others are dead-lettered already).

        The control plane being down must not drop anything: JetStream keeps the backlog
        and we keep our messages in progress so they are not redelivered elsewhere.
        """
        delay = min(0.2, self._policy.max_backoff_s)
        name = self._spec.name
        while True:
            try:
                with metrics.RELAY_UPLOAD_SECONDS.labels(name).time():
                    outcome = await self._spec.upload([item for _, item in pairs])
                metrics.RELAY_BATCH_SIZE.labels(name).observe(len(pairs))
                stored = await self._without_refused(pairs, outcome)
                metrics.RELAY_UPLOADED.labels(name).inc(len(stored))
                return stored
            except AgentApiError as err:
                # Only content refusals (and batches over the size limit) are the messages'
                # fault; anything else (a bad token, a server bug) is retried so that
                # fixing it loses nothing. Bisecting finds the culprit or a size that fits.
                if not (err.is_bad_input or err.is_too_large):
                    metrics.RELAY_UPLOAD_FAILURES.labels(name).inc()
                    log.error(
                        "%s: upload refused (%s); retrying in %.1fs", self._spec.name, err, delay
                    )
                elif len(pairs) == 1:
                    await self.dead_letter(pairs[0][0], f"refused by control plane: {err}")
                    return []
                else:
                    mid = len(pairs) // 2
                    return await self._upload_until_done(
                        pairs[:mid]
                    ) + await self._upload_until_done(pairs[mid:])
            except Exception as err:  # noqa: BLE001 - transport errors after the client's own retries
                metrics.RELAY_UPLOAD_FAILURES.labels(name).inc()
                log.warning(
                    "%s: upload failed (%s); retrying in %.1fs", self._spec.name, err, delay
                )
            if self._stopping.is_set():
                raise _HandBack
            # The heartbeat keeps the batch ours meanwhile; stop() cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * (0.5 + random.random())):
                    await self._stopping.wait()
            delay = min(delay * 2, self._policy.max_backoff_s)

    async def _without_refused(self, pairs: list[tuple[Msg, T]], outcome: object) -> list[Msg]:
        """The messages of ``pairs`` stored; those the outcome lists as refused on their
        own are dead-lettered (so one bad message never stalls the rest)."""
        refused = {}
        for entry in getattr(outcome, "refused", None) or ():
            if 0 <= entry.index < len(pairs):
                refused[entry.index] = entry.reason
        for index, reason in sorted(refused.items()):
            await self.dead_letter(pairs[index][0], f"refused by control plane: {reason}")
        return [msg for index, (msg, _) in enumerate(pairs) if index not in refused]

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Move ``msg`` to the dead-letter stream with ``reason`` and terminate it."""
        log.error("%s: dead-lettering message on %s: %s", self._spec.name, msg.subject, reason)
        metrics.RELAY_DEAD_LETTERED.labels(self._spec.name).inc()
        await dead_letter(
            self._publish,
            self._spec.stream,
            msg.data,
            reason,
            headers=msg.headers,
            source_subject=msg.subject,
        )
        await self._settle(msg, term=True)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        await self._js.publish(subject, body, headers=headers)

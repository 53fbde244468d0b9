"""Publishing to JetStream from synchronous code, in order, each message until its PubAck.

The run worker's main thread runs user code, which is synchronous and may block for
long; NATS needs a running event loop to keep its connection alive (pings, reconnects).
So the connection lives in an asyncio loop on a background thread, and producers (the
main thread, output-capture threads, threads started by user code) hand messages over
through a bounded buffer. A full buffer slows producers down instead of growing memory
without bound.

The handoff is a locked deque plus a semaphore for its free slots: a producer only
crosses into the event loop (``call_soon_threadsafe``) when the consumer sleeps, not for
every message, which a run logging 100,000 lines would otherwise pay for each line. The
consumer takes what has queued up and publishes it pipelined: the PUB commands go out in
submission order on one connection (so the stream stores them in that order) and their
PubAcks are awaited together rather than one round trip each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import stamina
from nats.aio.client import Client as NATS
from tether.shared.nats.connection import connect_nats
from tether.shared.nats.streams import nats_unavailable
from tether.shared.wire.errors import TetherError

log = logging.getLogger(__name__)


class PublishError(TetherError):
    """A message could not be delivered to JetStream; the worker cannot finish the run."""


class _Reconnected(nats.errors.TimeoutError):
    """The connection was re-established while a PubAck was awaited: a PUB written to the
    old connection may be lost, so it is published again now (a retryable timeout)."""


@dataclass(frozen=True)
class OutgoingMessage:
    """One message waiting for its turn."""

    subject: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class JetStreamPublisher:
    """Publishes to JetStream from any thread, in submission order, each until acked.

    Args:
        nats_url: NATS server URL.
        connect_timeout: seconds to keep trying the first connection.
        retry_timeout: seconds one message may be retried before the publisher fails.
        ack_timeout: seconds to wait for one PubAck.
        queue_size: messages buffered before :meth:`publish` blocks.
        window: most messages published before their PubAcks are awaited.
        client_name: NATS connection name.
        credentials: the run's NATS user (``.creds`` text); None: connect without.
    """

    def __init__(
        self,
        nats_url: str,
        *,
        connect_timeout: float = 30.0,
        retry_timeout: float = 60.0,
        ack_timeout: float = 5.0,
        queue_size: int = 256,
        window: int = 64,
        client_name: str = "tether-run-worker",
        credentials: str | None = None,
    ) -> None:
        self._url = nats_url
        self._credentials = credentials
        self._connect_timeout = connect_timeout
        self._retry_timeout = retry_timeout
        self._ack_timeout = ack_timeout
        self._window = max(1, window)
        self._client_name = client_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        # Replaced (and the old one set) at each reconnect: see _publish_raced.
        self._reconnected: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        # Guards _pending, _sleeping and _closed; producers and the consumer hold it briefly.
        self._lock = threading.Lock()
        self._pending: deque[OutgoingMessage] = deque()
        self._free = threading.Semaphore(queue_size)
        self._sleeping = False
        self._closed = False
        self._error: BaseException | None = None
        self.published = 0

    @property
    def failed(self) -> bool:
        """Whether a message could not be delivered (later ones are dropped)."""
        return self._error is not None

    def start(self) -> None:
        """Connect in the background thread; return once connected.

        Raises:
            PublishError: NATS could not be reached within the connect timeout.
        """
        self._thread = threading.Thread(
            target=self._thread_main, name="nats-publisher", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise PublishError(
                f"cannot connect to NATS at {self._url}: {self._error}"
            ) from self._error

    def publish(self, subject: str, payload: bytes, headers: Mapping[str, str]) -> None:
        """Queue a message; blocks while the buffer is full.

        Raises:
            PublishError: the publisher failed or is closed.
        """
        self._raise_if_unusable()
        # Waiting for a free slot is the backpressure: a producer waits while NATS is slow.
        # In slices, so a publisher that died meanwhile is noticed instead of waited on.
        while not self._free.acquire(timeout=0.5):
            self._raise_if_unusable()
        message = OutgoingMessage(subject, payload, dict(headers))
        with self._lock:
            if self._closed:
                self._free.release()
                raise PublishError("publisher is closed")
            self._pending.append(message)
            wake = self._sleeping
            self._sleeping = False
        if wake:
            self._wake()

    def close(self) -> None:
        """Publish everything queued (each until acked), then disconnect.

        Raises:
            PublishError: some message could not be delivered.
        """
        if self._thread is None:
            return
        with self._lock:
            first_close = not self._closed
            self._closed = True
        if first_close and self._alive():
            self._wake()
        self._thread.join()
        if self._error is not None:
            raise PublishError(f"could not deliver every message: {self._error}") from self._error

    def _raise_if_unusable(self) -> None:
        if self._error is not None:
            raise PublishError(f"publishing stopped: {self._error}") from self._error
        if self._closed or self._loop is None or not self._alive():
            raise PublishError("publisher is not running")

    def _wake(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the loop already closed: the thread is gone
                pass

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 - reported to the producers instead
            self._error = self._error or err
            self._started.set()

    async def _main(self) -> None:
        self._wakeup = asyncio.Event()
        self._reconnected = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                nc = await connect_nats(
                    self._url,
                    self._client_name,
                    self._credentials,
                    reconnected_cb=self._on_reconnected,
                )
        except TimeoutError as err:
            self._error = TimeoutError(f"no connection within {self._connect_timeout:.0f}s")
            self._started.set()
            raise self._error from err
        self._started.set()
        try:
            await self._consume(nc)
        finally:
            try:
                await nc.close()
            except Exception:  # everything needed was already acked
                log.debug("closing the NATS connection failed", exc_info=True)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS; publishing unacknowledged messages again")
        old, self._reconnected = self._reconnected, asyncio.Event()
        if old is not None:
            old.set()

    async def _publish_raced(self, js: nats.js.JetStreamContext, item: OutgoingMessage) -> object:
        """``js.publish``, given up with :class:`_Reconnected` when the connection is
        re-established before its PubAck came.

        Without this, a PUB lost with the old connection is retried only after the whole
        ack timeout (seen: every run stalled ~5 s after each NATS restart).
        """
        reconnected = self._reconnected
        assert reconnected is not None
        publish = asyncio.ensure_future(
            js.publish(item.subject, item.payload, headers=dict(item.headers))
        )
        waiter = asyncio.ensure_future(reconnected.wait())
        try:
            await asyncio.wait((publish, waiter), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            publish.cancel()
            raise
        finally:
            waiter.cancel()
        if publish.done():
            return publish.result()
        publish.cancel()
        raise _Reconnected("reconnected before the PubAck came")

    def _take(self) -> list[OutgoingMessage] | None:
        """Up to a window of queued messages; [] to sleep; None once closed and drained."""
        with self._lock:
            batch = [self._pending.popleft() for _ in range(min(self._window, len(self._pending)))]
            if not batch:
                if self._closed:
                    return None
                self._sleeping = True
            return batch

    async def _consume(self, nc: NATS) -> None:
        js = nc.jetstream(timeout=self._ack_timeout)
        assert self._wakeup is not None
        first = True
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            try:
                if self._error is None:
                    rest = batch
                    if first:
                        # The first request sets up nats-py's reply subscription; concurrent
                        # first requests would each try to.
                        await self._publish_one(js, batch[0])
                        first, rest = False, batch[1:]
                    if rest:
                        await self._publish(js, rest)
                    self.published += len(batch)
            except Exception as err:  # noqa: BLE001 - stops publishing; producers are told
                log.error("giving up publishing to %s: %r", batch[0].subject, err)
                self._error = err
            finally:
                # Released even after an error (the batch is dropped), so producers blocked
                # on a full buffer wake up and see the error instead of hanging.
                for _ in batch:
                    self._free.release()

    async def _publish(self, js: nats.js.JetStreamContext, batch: list[OutgoingMessage]) -> None:
        """Publish ``batch`` pipelined; retry the ones that failed, in order, one by one."""
        if len(batch) == 1:
            await self._publish_one(js, batch[0])
            return
        # Each coroutine writes its PUB before its first suspension and the tasks start in
        # order, so the commands leave in submission order; only the acks overlap.
        results = await asyncio.gather(
            *(self._publish_raced(js, m) for m in batch), return_exceptions=True
        )
        for message, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                if not nats_unavailable(result, publishing=True):
                    raise result
                # Nats-Msg-Id makes this a no-op when the first attempt landed but its ack
                # was lost; a message that really was lost lands after its successors
                # (readers order by seq / offset, never by stream position).
                await self._publish_one(js, message)

    async def _publish_one(self, js: nats.js.JetStreamContext, item: OutgoingMessage) -> None:
        async for attempt in stamina.retry_context(
            on=lambda exc: nats_unavailable(exc, publishing=True),
            attempts=None,
            timeout=self._retry_timeout,
            wait_initial=0.05,
            wait_max=2.0,
        ):
            with attempt:
                if attempt.num > 1:
                    log.warning("retrying publish to %s (attempt %d)", item.subject, attempt.num)
                # A retried message keeps its Nats-Msg-Id, so JetStream drops the duplicate
                # when an earlier attempt did land but its PubAck was lost.
                await self._publish_raced(js, item)

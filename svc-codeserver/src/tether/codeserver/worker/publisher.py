"""Publishing to JetStream from synchronous code, in order, each message until its PubAck.

The run worker's main thread runs user code, which is synchronous and may block for
long; NATS needs a running event loop to keep its connection alive (pings, reconnects).
So the connection lives in an asyncio loop on a background thread, and producers (the
main thread, output-capture threads, threads started by user code) hand messages over
through a bounded queue. One consumer publishes them in submission order, which keeps
event ``seq`` and log offsets in order on the stream, and a full queue slows producers
down instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import stamina
from nats.aio.client import Client as NATS
from tether.shared.errors import TetherError
from tether.shared.service import connect_nats

log = logging.getLogger(__name__)


class PublishError(TetherError):
    """A message could not be delivered to JetStream; the worker cannot finish the run."""


@dataclass(frozen=True)
class OutgoingMessage:
    """One message waiting for its turn."""

    subject: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


_CLOSE = object()


def _is_transient(exc: Exception) -> bool:
    """Whether retrying the same publish may succeed.

    No responders means no stream captures the subject yet (its owner has not declared
    it); timeouts and reconnects are NATS restarting; 5xx-like API errors are JetStream
    being temporarily unavailable or the stream being full (discard=new).
    """
    if isinstance(
        exc,
        (
            nats.js.errors.NoStreamResponseError,
            nats.errors.NoRespondersError,
            nats.errors.TimeoutError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.OutboundBufferLimitError,
            asyncio.TimeoutError,
        ),
    ):
        return True
    if isinstance(exc, nats.js.errors.APIError):
        return exc.code in (None, 404, 500, 503)
    return False


class JetStreamPublisher:
    """Publishes to JetStream from any thread, in submission order, each until acked.

    Args:
        nats_url: NATS server URL.
        connect_timeout: seconds to keep trying the first connection.
        retry_timeout: seconds one message may be retried before the publisher fails.
        ack_timeout: seconds to wait for one PubAck.
        queue_size: messages buffered before :meth:`publish` blocks.
        client_name: NATS connection name.
    """

    def __init__(
        self,
        nats_url: str,
        *,
        connect_timeout: float = 30.0,
        retry_timeout: float = 60.0,
        ack_timeout: float = 5.0,
        queue_size: int = 256,
        client_name: str = "tether-run-worker",
    ) -> None:
        self._url = nats_url
        self._connect_timeout = connect_timeout
        self._retry_timeout = retry_timeout
        self._ack_timeout = ack_timeout
        self._queue_size = queue_size
        self._client_name = client_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[OutgoingMessage | object] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
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
        """Queue a message; blocks while the queue is full.

        Raises:
            PublishError: the publisher failed or is closed.
        """
        if self._error is not None:
            raise PublishError(f"publishing stopped: {self._error}") from self._error
        if self._closed or self._loop is None or self._queue is None or not self._alive():
            raise PublishError("publisher is not running")
        message = OutgoingMessage(subject, payload, dict(headers))
        # Blocking on the put is the backpressure: a producer waits while NATS is slow.
        asyncio.run_coroutine_threadsafe(self._queue.put(message), self._loop).result()

    def close(self) -> None:
        """Publish everything queued (each until acked), then disconnect.

        Raises:
            PublishError: some message could not be delivered.
        """
        if self._thread is None:
            return
        if (
            not self._closed
            and self._loop is not None
            and self._queue is not None
            and self._alive()
        ):
            self._closed = True
            asyncio.run_coroutine_threadsafe(self._queue.put(_CLOSE), self._loop).result()
        self._thread.join()
        if self._error is not None:
            raise PublishError(f"could not deliver every message: {self._error}") from self._error

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 - reported to the producers instead
            self._error = self._error or err
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self._queue_size)
        try:
            async with asyncio.timeout(self._connect_timeout):
                nc = await connect_nats(self._url, self._client_name)
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
            except Exception:  # noqa: BLE001 - everything needed was already acked
                log.debug("closing the NATS connection failed", exc_info=True)

    async def _consume(self, nc: NATS) -> None:
        js = nc.jetstream(timeout=self._ack_timeout)
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            if item is _CLOSE:
                return
            if self._error is not None:
                # Keep draining so producers blocked on a full queue never hang.
                continue
            assert isinstance(item, OutgoingMessage)
            try:
                await self._publish_one(js, item)
                self.published += 1
            except Exception as err:  # noqa: BLE001 - stops publishing; producers are told
                log.error("giving up publishing to %s: %r", item.subject, err)
                self._error = err

    async def _publish_one(self, js: nats.js.JetStreamContext, item: OutgoingMessage) -> None:
        async for attempt in stamina.retry_context(
            on=_is_transient,
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
                await js.publish(item.subject, item.payload, headers=dict(item.headers))

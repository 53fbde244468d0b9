"""JetStream stream and consumer definitions.

Each stream has exactly one owner service that declares it (declaring from several
services would overwrite limits); everyone else only binds. ``ensure_stream`` is called
by the owner; ``wait_for_stream`` by the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import stamina
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from tether.shared.nats import subjects
from tether.shared.nats.subjects import Stream

DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class StreamSpec:
    """A stream's configuration and the service that owns (declares) it."""

    name: Stream
    subjects: tuple[str, ...]
    owner: str
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    max_bytes: int = 1 << 30
    max_age_s: float = 7 * 24 * 3600.0

    def config(self, replicas: int = 1) -> StreamConfig:
        """The nats-py StreamConfig of this spec, kept on ``replicas`` servers of a
        JetStream cluster (``TETHER_NATS_REPLICAS``; 1 on a single server)."""
        return StreamConfig(
            name=str(self.name),
            subjects=list(self.subjects),
            retention=self.retention,
            storage=StorageType.FILE,
            max_bytes=self.max_bytes,
            max_age=self.max_age_s,
            # Backpressure, not loss: when the stream is full, publishers get an error and
            # retry instead of the oldest unconsumed data being discarded.
            discard=DiscardPolicy.NEW,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        )


STREAMS: dict[Stream, StreamSpec] = {
    Stream.WORK: StreamSpec(
        Stream.WORK, (subjects.work_all(),), owner="poller", retention=RetentionPolicy.WORK_QUEUE
    ),
    Stream.RESULTS: StreamSpec(
        Stream.RESULTS,
        (subjects.results_all(),),
        owner="eventrelay",
        retention=RetentionPolicy.WORK_QUEUE,
    ),
    Stream.EVENTS: StreamSpec(
        Stream.EVENTS,
        (subjects.events_all(),),
        owner="eventrelay",
        retention=RetentionPolicy.WORK_QUEUE,
    ),
    Stream.LOGS: StreamSpec(
        Stream.LOGS,
        (subjects.logs_all(),),
        owner="logship",
        retention=RetentionPolicy.WORK_QUEUE,
        max_bytes=4 << 30,
    ),
    Stream.DEAD_LETTER: StreamSpec(
        Stream.DEAD_LETTER, (subjects.dead_letter_all(),), owner="eventrelay"
    ),
}


log = logging.getLogger(__name__)

T = TypeVar("T")


def nats_unavailable(exc: BaseException, *, publishing: bool = False) -> bool:
    """Whether ``exc`` means NATS (or JetStream) is restarting or unreachable right now,
    so the same call may succeed later.

    Timeouts and reconnects are NATS restarting; no responders and 500/503 API errors are
    JetStream not ready yet or temporarily unavailable (a stream full under
    ``discard=new`` answers 503 too).

    Args:
        exc: what the call raised.
        publishing: the call was a publish, which may also wait for its stream: no stream
            captures the subject until its owner has declared it (no stream response, a
            404 or code-less API error), so a publisher retries those too.
    """
    if isinstance(
        exc,
        (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.OutboundBufferLimitError,
            nats.js.errors.ServiceUnavailableError,
            asyncio.TimeoutError,
        ),
    ):
        return True
    if publishing and isinstance(exc, nats.js.errors.NoStreamResponseError):
        return True
    if not isinstance(exc, nats.js.errors.APIError):
        return False
    return exc.code in ((None, 404, 500, 503) if publishing else (500, 503))


async def jetstream_call(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``await call()``, retried (backoff with jitter, no limit) while NATS is unavailable.

    For the JetStream API calls a service makes when it starts (declaring streams and
    consumers, binding KV buckets): a service started while NATS restarts waits for it
    instead of crashing. Cancellation (shutdown) ends the wait.
    """
    async for attempt in stamina.retry_context(
        on=nats_unavailable, attempts=None, timeout=None, wait_initial=0.1, wait_max=2.0
    ):
        with attempt:
            if attempt.num > 1:
                log.warning("NATS unavailable: retrying %s (attempt %d)", what, attempt.num)
            return await call()
    raise AssertionError("unreachable")  # stamina retries until success or a raise


def owned_by(service: str) -> list[StreamSpec]:
    """The streams ``service`` must declare."""
    return [spec for spec in STREAMS.values() if spec.owner == service]


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int = 1) -> None:
    """Create the stream, or update it to ``spec`` (only the owner calls this); waits
    for NATS while it is unavailable.

    An existing stream with another replica count is moved to ``replicas`` (a JetStream
    cluster re-replicates it in place), so raising ``TETHER_NATS_REPLICAS`` and restarting
    the owner is the whole migration from one replica to three.
    """

    async def declare() -> None:
        try:
            await js.stream_info(str(spec.name))
        except NotFoundError:
            await js.add_stream(spec.config(replicas))
            return
        await js.update_stream(spec.config(replicas))

    await jetstream_call(declare, f"declaring stream {spec.name}")
    await wait_for_leader(js, str(spec.name))


#: Seconds a new or moved stream may take to elect its leader on a JetStream cluster.
LEADER_TIMEOUT_S = 30.0


async def wait_for_leader(
    js: JetStreamContext, stream: str, timeout: float = LEADER_TIMEOUT_S
) -> None:
    """Wait until ``stream`` has a leader (at once on a single server): until then, on a
    cluster, a new or moved stream answers nobody and a put or publish right after its
    creation fails with "no responders".

    Raises:
        TimeoutError: no leader within ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        while True:
            try:
                info = await js.stream_info(stream)
            except Exception as err:  # only NATS being away (or an election) is waited out
                if not nats_unavailable(err):
                    raise
            else:
                if info.cluster is None or info.cluster.leader:
                    return
            await asyncio.sleep(0.05)


async def ensure_owned_streams(js: JetStreamContext, service: str, *, replicas: int = 1) -> None:
    """Declare every stream ``service`` owns, each on ``replicas`` servers."""
    for spec in owned_by(service):
        await ensure_stream(js, spec, replicas=replicas)


async def wait_for_stream(js: JetStreamContext, name: Stream, timeout: float = 60.0) -> None:
    """Wait until another service has declared stream ``name``.

    Raises:
        TimeoutError: the stream did not appear within ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        while True:
            try:
                await js.stream_info(str(name))
                return
            except NotFoundError:
                await asyncio.sleep(0.2)
            except Exception as err:  # only NATS being away is waited out
                if not nats_unavailable(err):
                    raise
                await asyncio.sleep(0.2)


async def bind_bucket(
    js: JetStreamContext, config: KeyValueConfig, *, replicas: int | None = None
) -> KeyValue:
    """Bind KV bucket ``config.bucket``, creating it with ``config`` when it is missing.

    Every user of a bucket may create it (they all declare the same config); when two
    create it at the same moment, the loser binds the winner's.

    Args:
        js: the JetStream context.
        config: the bucket's configuration. Its ``ttl``, when set, is also applied to an
            existing bucket that has another (or none), so a bucket made before its keys
            expired stops growing once its users are upgraded.
        replicas: servers of a JetStream cluster that keep the bucket
            (``TETHER_NATS_REPLICAS``): it is created with that many, and an existing
            bucket with another count is moved to it. None (a reader that does not know
            the setting): ``config.replicas`` on creation, an existing bucket left as it is.
    """
    bucket = str(config.bucket)
    if replicas is not None:
        config = dataclasses.replace(config, replicas=replicas)
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        try:
            kv = await js.create_key_value(config)
        except nats.errors.Error:
            # Another service created it at the same moment.
            kv = await js.key_value(bucket)
    else:
        if replicas is not None or config.ttl:
            await _reconcile(js, f"KV_{bucket}", replicas=replicas, max_age=config.ttl or None)
    await wait_for_leader(js, f"KV_{bucket}")
    return kv


async def _reconcile(
    js: JetStreamContext, stream: str, *, replicas: int | None, max_age: float | None
) -> None:
    """Move ``stream`` (a KV bucket's) to ``replicas`` servers and give it ``max_age``
    seconds where it has another (None: leave that one as it is); the rest of its
    configuration is kept as it is."""
    info = await js.stream_info(stream)
    changes: dict[str, Any] = {}
    if replicas is not None and (info.config.num_replicas or 1) != replicas:
        log.info(
            "moving stream %s from %s to %d replicas", stream, info.config.num_replicas, replicas
        )
        changes["num_replicas"] = replicas
    # The server keeps nanoseconds; a float of seconds rounds on the way back.
    if max_age is not None and abs((info.config.max_age or 0.0) - max_age) > 1e-3:
        log.info("stream %s: max age %s -> %.0f s", stream, info.config.max_age, max_age)
        changes["max_age"] = max_age
    if changes:
        await js.update_stream(dataclasses.replace(info.config, **changes))


async def kv_keys(js: JetStreamContext, bucket: str) -> list[str]:
    """The keys of KV ``bucket`` that hold a message, from its stream's subject index.

    nats-py's ``KeyValue.keys()`` races under load: it starts an ordered consumer, then asks
    the server how many entries are still pending; when the server has already pushed them
    all but the client has not handled one yet, it reports "no keys" for a bucket that has
    some. The stream's per-subject state is one API call and no consumer. A deleted key is
    listed too (its delete marker is a message): ``get`` then raises ``KeyNotFoundError``,
    which callers of a listing must handle anyway (a key may go between list and read).
    """
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return sorted(subject[len(prefix) :] for subject in info.state.subjects or {})


#: Seconds the second step of :func:`fetch_ready` may wait for messages it was told exist.
_DRAIN_TIMEOUT_S = 1.0
#: Seconds it waits for more redeliveries after a redelivered message (their number is not
#: known: the request returns what came when it expires).
_REDELIVERY_DRAIN_S = 0.25


async def fetch_ready(
    sub: JetStreamContext.PullSubscription, batch: int, timeout: float
) -> list[Msg]:
    """Up to ``batch`` messages of a pull consumer, returned as soon as one is there.

    nats-py's ``fetch(n)`` for ``n > 1``, once one message arrived on its waiting pull
    request, waits for the rest of the batch until a status message ends it: that can be
    the expiry of an earlier, already-abandoned pull request of the same subscription,
    seconds later (seen as launches starting up to the launcher's 5 s fetch window late).
    Here the wait is ``fetch(1)``, which returns the first message that arrives; then what
    is already there (the consumer's ``num_pending`` as of the first message, and what an
    abandoned request already delivered into the subscription's buffer) is taken in one
    more request, which the server fills at once.

    Raises:
        TimeoutError: nothing arrived within ``timeout`` (nats-py's or the builtin one).
    """
    msgs = await sub.fetch(1, timeout=timeout)
    pending = (msgs[0].metadata.num_pending or 0) + sub.pending_msgs if msgs else 0
    want, wait = min(batch - 1, pending), _DRAIN_TIMEOUT_S
    if msgs and msgs[0].metadata.num_delivered > 1:
        # A redelivery: ``num_pending`` counts only messages never delivered, so the rest
        # of a dead consumer's batch, queued for redelivery behind this one, is not in it;
        # asking for only ``num_pending`` more took them one per fetch, after newer ones.
        want, wait = batch - 1, _REDELIVERY_DRAIN_S
    if batch > 1 and want > 0:
        try:
            msgs += await sub.fetch(want, timeout=wait)
        except (TimeoutError, nats.errors.Error) as err:
            # Another replica took them first, or the request failed: the first message is
            # in hand either way and must not be dropped (it would wait for redelivery).
            log.debug("no more messages after the first: %r", err)
    return msgs

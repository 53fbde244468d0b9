"""How full each JetStream stream is, watched by its owner (and by the poller before it
claims more work).

Streams discard nothing when full (``discard=new``): publishers are refused instead, so a
stream that fills up while the control plane is unreachable stalls the runs that publish to
it. The owner of a stream therefore watches its bytes against ``max_bytes`` and the age of
its oldest message (the oldest not acked, for a work-queue stream), exports both as metrics,
and reports a stream over :data:`DEGRADED_AT` in ``/readyz`` as degraded; the poller stops
claiming new work while the work or events stream is nearly full, so the backlog it cannot
upload does not grow into refused publishes of running runs.

The numbers come from one ``STREAM.INFO`` request per stream, read raw: nats-py's
``StreamState`` drops ``first_ts``, the oldest message's time, and reading the message
itself would need read access to its content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from tether.shared.nats import subjects
from tether.shared.runtime import metrics

log = logging.getLogger(__name__)

#: Fraction of ``max_bytes`` above which a stream is reported degraded.
DEGRADED_AT = 0.8
#: The zero time nats-server reports as ``first_ts`` of an empty stream.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StreamFullness:
    """One stream's size against its limit, and how old its oldest message is."""

    stream: str
    bytes: int
    limit_bytes: int | None
    messages: int
    oldest_age_s: float | None

    @property
    def ratio(self) -> float | None:
        """Stored bytes over ``max_bytes`` (None: the stream has no byte limit)."""
        return None if not self.limit_bytes else self.bytes / self.limit_bytes

    def as_dict(self) -> dict[str, Any]:
        """For ``/readyz``."""
        return {
            "bytes": self.bytes,
            "limit_bytes": self.limit_bytes,
            "fullness": self.ratio,
            "messages": self.messages,
            "oldest_age_s": None if self.oldest_age_s is None else round(self.oldest_age_s, 1),
        }


def parse_stream_info(stream: str, info: dict[str, Any], now: float) -> StreamFullness:
    """A StreamFullness from a ``STREAM.INFO`` response body.

    Raises:
        ValueError: the body is an error response or lacks the state.
    """
    if "error" in info:
        raise ValueError(f"stream {stream}: {info['error'].get('description', info['error'])}")
    state, config = info["state"], info.get("config") or {}
    limit = config.get("max_bytes")
    messages = int(state.get("messages", 0))
    oldest: float | None = None
    first = state.get("first_ts")
    if messages and first:
        stamp = datetime.fromisoformat(first)
        if stamp > _EPOCH:
            oldest = max(0.0, now - stamp.timestamp())
    return StreamFullness(
        stream=stream,
        bytes=int(state.get("bytes", 0)),
        limit_bytes=int(limit) if limit and int(limit) > 0 else None,
        messages=messages,
        oldest_age_s=oldest,
    )


async def stream_fullness(nc: NATS, stream: str, *, timeout: float = 2.0) -> StreamFullness:
    """Ask JetStream how full ``stream`` is.

    Raises:
        ValueError: JetStream answered with an error (e.g. no such stream).
        nats.errors.Error: NATS did not answer.
    """
    reply = await nc.request(subjects.js_api("STREAM.INFO", stream), b"", timeout=timeout)
    return parse_stream_info(stream, json.loads(reply.data), time.time())


class StreamWatch:
    """Refreshes the fullness of ``streams`` every ``interval_s`` and exports it.

    Args:
        nc: a connection whose user may read the streams' info.
        streams: stream names.
        interval_s: seconds between refreshes.
    """

    def __init__(self, nc: NATS, streams: Iterable[str], *, interval_s: float = 5.0) -> None:
        self._nc = nc
        self._streams = list(streams)
        self._interval_s = interval_s
        self._latest: dict[str, StreamFullness] = {}

    @property
    def latest(self) -> dict[str, StreamFullness]:
        """The last reading of each stream (missing: never read yet)."""
        return dict(self._latest)

    async def refresh(self) -> None:
        """Read every stream once (a stream that cannot be read keeps its last reading)."""
        for stream in self._streams:
            try:
                found = await stream_fullness(self._nc, stream)
            except (ValueError, KeyError, nats.errors.Error, TimeoutError) as err:
                log.debug("fullness of stream %s unknown: %r", stream, err)
                continue
            self._latest[stream] = found
            _export(found)

    async def run(self) -> None:
        """Refresh until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval_s)

    def over(self, threshold: float, streams: Iterable[str] | None = None) -> list[str]:
        """The streams (of ``streams``, default all watched) fuller than ``threshold``."""
        names = self._streams if streams is None else list(streams)
        found = [self._latest.get(name) for name in names]
        return [f.stream for f in found if f and f.ratio is not None and f.ratio > threshold]

    def details(self) -> dict[str, Any]:
        """``/readyz`` detail: ``degraded`` when a stream is over :data:`DEGRADED_AT`."""
        degraded = self.over(DEGRADED_AT)
        body: dict[str, Any] = {
            "streams": {name: f.as_dict() for name, f in sorted(self._latest.items())}
        }
        if degraded:
            body["degraded"] = [f"stream {name} over {DEGRADED_AT:.0%} full" for name in degraded]
        return body


async def while_watching(watch: StreamWatch, work: Awaitable[None]) -> None:
    """Await ``work`` with ``watch`` refreshing beside it until ``work`` ends."""
    watching = asyncio.create_task(watch.run())
    try:
        await work
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


def _export(found: StreamFullness) -> None:
    stream = found.stream
    metrics.STREAM_BYTES.labels(stream).set(found.bytes)
    metrics.STREAM_MESSAGES.labels(stream).set(found.messages)
    if found.limit_bytes is not None:
        metrics.STREAM_LIMIT_BYTES.labels(stream).set(found.limit_bytes)
        metrics.STREAM_FULLNESS.labels(stream).set(found.ratio or 0.0)
    metrics.STREAM_OLDEST_AGE.labels(stream).set(found.oldest_age_s or 0.0)

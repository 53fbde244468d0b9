"""Launcher heartbeats: each launcher process keeps a key with a TTL fresh in the
``LAUNCHER_HEARTBEATS`` bucket, so that any launcher, on any host, can tell that the
claimer of a run claim is gone.

A pid tells that only within one pid namespace; an expired heartbeat tells it
everywhere. Each write carries its own TTL (a per-message TTL, ``Nats-TTL``), so every
launcher keeps its own ``heartbeat_ttl_s`` whatever the bucket was created with, and the
server removes the key when its last write is older than that. A launcher that stops
cleanly deletes its key at once: its unlaunched claims can be taken over without waiting.

The bucket is on file storage: a NATS restart must not make every live launcher look
dead. After an outage longer than the TTL the keys have expired anyway; what keeps a run
from being launched twice then is the compare-and-set on its claim before its worker is
started (:meth:`tether.launcher.runs.RunClaims.start`), not the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from pydantic import BaseModel
from tether.shared.nats import subjects
from tether.shared.nats.streams import bind_bucket
from tether.shared.nats.subjects import Bucket
from tether.shared.runtime.service import raise_if_cancelling

__all__ = ["Heartbeat", "HeartbeatBeat", "Heartbeats", "heartbeat_key"]

log = logging.getLogger(__name__)

#: The header of a per-message TTL (nats-server 2.11+); nats-py's ``msg_ttl`` rounds
#: to whole seconds, so the value is written here as a duration in milliseconds.
_TTL_HEADER = "Nats-TTL"


def heartbeat_key() -> str:
    """A key naming this launcher process: ``<host>-<pid>-<random>`` (host and pid for
    people; the random part because two hosts, or two pid namespaces, reuse pids)."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


class HeartbeatBeat(BaseModel):
    """The value of a heartbeat key (for people and logs; liveness is the key's presence).

    Attributes:
        launcher: agent id and substrate of the launcher.
        domain: its launcher domain.
        pid: its pid (in its own pid namespace).
        at: epoch seconds of the write.
    """

    launcher: str
    domain: str
    pid: int
    at: float


class Heartbeats:
    """The ``LAUNCHER_HEARTBEATS`` bucket.

    Args:
        js: the JetStream context (a write with a TTL is a publish with a header).
        kv: the bucket.
    """

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int | None = None) -> Heartbeats:
        """Bind the bucket, creating it when missing (every launcher may; same config),
        on ``replicas`` servers of a JetStream cluster.

        The bucket has no TTL of its own: each write brings its own.
        """
        config = KeyValueConfig(
            bucket=str(Bucket.LAUNCHER_HEARTBEATS),
            description="launcher process -> its liveness (per-key TTL)",
            history=1,
            storage=StorageType.FILE,
        )
        return cls(js, await bind_bucket(js, config, replicas=replicas))

    async def put(self, key: str, beat: HeartbeatBeat, ttl_s: float) -> None:
        """Write ``key``, expiring ``ttl_s`` after this write unless written again."""
        await self._js.publish(
            subjects.kv_key(Bucket.LAUNCHER_HEARTBEATS, key),
            beat.model_dump_json().encode(),
            headers={_TTL_HEADER: f"{round(ttl_s * 1000)}ms"},
        )

    async def alive(self, key: str) -> bool:
        """Whether ``key``'s launcher refreshed it within its TTL (the server removed it
        otherwise; a clean shutdown deleted it)."""
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return False
        return entry.value is not None and len(entry.value) > 0

    async def delete(self, key: str) -> None:
        """Remove ``key`` (a clean shutdown)."""
        await self._kv.delete(key)


class Heartbeat:
    """This launcher's heartbeat: :meth:`run` refreshes it every ``refresh_s``.

    Args:
        heartbeats: the bucket.
        launcher: agent id and substrate of this launcher.
        domain: its launcher domain.
        ttl_s: how long the key outlives its last refresh.
        refresh_s: seconds between refreshes (well within ``ttl_s``).
        key: this process's key (default: :func:`heartbeat_key`).
    """

    def __init__(
        self,
        heartbeats: Heartbeats,
        *,
        launcher: str,
        domain: str,
        ttl_s: float,
        refresh_s: float,
        key: str | None = None,
    ) -> None:
        self.heartbeats = heartbeats
        self.key = key or heartbeat_key()
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self._launcher = launcher
        self._domain = domain

    async def beat(self) -> None:
        """Refresh the key once (raises what NATS raises)."""
        beat = HeartbeatBeat(
            launcher=self._launcher, domain=self._domain, pid=os.getpid(), at=time.time()
        )
        await self.heartbeats.put(self.key, beat, self.ttl_s)

    async def run(self) -> None:
        """Refresh every ``refresh_s`` until cancelled; then delete the key (best effort)."""
        try:
            while True:
                try:
                    await self.beat()
                except (nats.errors.Error, OSError, TimeoutError) as err:
                    # NATS away: the key may expire, and others may take over this
                    # launcher's unlaunched claims; the claim's compare-and-set before a
                    # start keeps the run from starting twice.
                    log.warning("launcher heartbeat refresh failed: %r", err)
                raise_if_cancelling()
                await asyncio.sleep(self.refresh_s)
        except asyncio.CancelledError:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await self.heartbeats.delete(self.key)
            raise

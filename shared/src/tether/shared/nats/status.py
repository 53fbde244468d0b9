"""Liveness of an agent's services: each process keeps its own entry fresh in a NATS KV
bucket, and the poller reads the bucket into the heartbeat it sends the control plane.

Through NATS rather than over HTTP so that no service needs the control plane to report
itself, and so that the agent stays one outbound connection to the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from tether.shared.nats.streams import bind_bucket, kv_keys
from tether.shared.nats.subjects import Bucket, Stream
from tether.shared.runtime.service import raise_if_cancelling
from tether.shared.wire.agent import CodeServerStatus, ServiceStatus
from tether.shared.wire.base import decode, encode
from tether.shared.wire.errors import ContractError

log = logging.getLogger(__name__)

STATUS_TTL_S = 30.0
"""How long an entry outlives its last refresh; reporters refresh well within it."""

MAX_ERRORS = 10


def instance_name() -> str:
    """This process among replicas: ``<host>-<pid>`` (a valid KV key token)."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host}-{os.getpid()}"


async def status_bucket(js: JetStreamContext, *, replicas: int | None = None) -> KeyValue:
    """Bind the status bucket, creating it when missing (every reporter may; same config),
    on ``replicas`` servers (see :func:`bind_bucket`)."""
    return await bind_bucket(
        js,
        KeyValueConfig(
            bucket=str(Bucket.SERVICE_STATUS),
            description="service/instance -> ServiceStatus, expiring when not refreshed",
            history=1,
            ttl=STATUS_TTL_S,
            # Liveness is worthless after a NATS restart; no need to write it to disk.
            storage=StorageType.MEMORY,
        ),
        replicas=replicas,
    )


class StatusReporter:
    """Keeps one service process's :class:`ServiceStatus` fresh until cancelled.

    Args:
        js: JetStream context of the service's connection.
        service: the service's name.
        interval_s: seconds between refreshes (well below :data:`STATUS_TTL_S`).
        code_servers: called at each refresh for the code servers this process runs.
        replicas: servers of a JetStream cluster that keep the bucket, when this process
            creates it (``TETHER_NATS_REPLICAS``); None: the bucket's default.
    """

    def __init__(
        self,
        js: JetStreamContext,
        service: str,
        *,
        interval_s: float = 5.0,
        code_servers: Callable[[], list[CodeServerStatus]] | None = None,
        replicas: int | None = None,
    ) -> None:
        self._js = js
        self._replicas = replicas
        self._service = service
        self._instance = instance_name()
        self._interval_s = interval_s
        self._code_servers = code_servers
        self._errors: deque[str] = deque(maxlen=MAX_ERRORS)
        self._started_at = time.time()

    @property
    def key(self) -> str:
        """This process's key in the bucket."""
        return f"{self._service}.{self._instance}"

    def error(self, message: str) -> None:
        """Remember an error to report (the newest :data:`MAX_ERRORS` are kept)."""
        self._errors.append(message)

    def status(self, state: str = "RUNNING") -> ServiceStatus:
        """What this process reports now."""
        return ServiceStatus(
            service=self._service,
            instance=self._instance,
            state=state,
            started_at=self._started_at,
            code_servers=self._code_servers() if self._code_servers else [],
            errors=list(self._errors),
        )

    async def run(self) -> None:
        """Refresh the entry every interval; on cancellation, report STOPPED once."""
        kv: KeyValue | None = None
        try:
            while True:
                try:
                    kv = kv or await status_bucket(self._js, replicas=self._replicas)
                    await kv.put(self.key, encode(self.status()))
                except (nats.errors.Error, OSError, TimeoutError) as err:
                    # NATS down: the entry expires and the agent shows this service as gone,
                    # which is the truth as far as the control plane can know.
                    log.debug("status refresh failed: %r", err)
                raise_if_cancelling()
                await asyncio.sleep(self._interval_s)
        except asyncio.CancelledError:
            if kv is not None:
                with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                    async with asyncio.timeout(1):
                        await kv.put(self.key, encode(self.status("STOPPED")))
            raise


async def read_statuses(js: JetStreamContext) -> list[ServiceStatus]:
    """Every live service status of the agent; malformed entries are skipped with a log."""
    kv = await status_bucket(js)
    keys = await kv_keys(js, str(Bucket.SERVICE_STATUS))
    found = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue  # expired between listing and reading
        if not entry.value:
            continue
        try:
            found.append(decode(entry.value, ServiceStatus))
        except ContractError as err:
            log.warning("ignoring malformed status %s: %s", key, err)
    return found


async def queue_depths(js: JetStreamContext) -> dict[str, int]:
    """The backlog of each agent stream: messages its consumers have not yet acked.

    Streams with limits retention keep acked messages for a while, so their size is not a
    backlog; the consumers' pending counts are. A stream nobody consumes yet reports its
    stored messages.
    """
    depths = {}
    for stream in Stream:
        try:
            info = await js.stream_info(str(stream))
            consumers = await js.consumers_info(str(stream))
        except nats.js.errors.NotFoundError:
            continue
        if consumers:
            # nats-server always sends both counts; nats-py types them Optional (None defaults).
            depths[str(stream)] = max(
                cast(int, c.num_pending) + cast(int, c.num_ack_pending) for c in consumers
            )
        else:
            depths[str(stream)] = info.state.messages
    return depths


async def while_reporting(reporter: StatusReporter, work: Awaitable[None]) -> None:
    """Await ``work`` with ``reporter`` refreshing beside it; report STOPPED when it ends."""
    reporting = asyncio.create_task(reporter.run())
    try:
        await work
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)

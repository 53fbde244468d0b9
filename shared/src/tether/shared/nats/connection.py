"""The one way a Tether process connects to NATS: with its user's credentials, its own
inbox, and retries of the first connection (nats-py reconnects by itself after that).

A NATS URL setting may name several servers, comma-separated (every node of a JetStream
cluster: ``nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222``); the client then
connects to any of them and, when its server is lost, reconnects to another."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from tether.shared.nats import auth as natsauth

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Reconnect for ever, soon: a service outlives any NATS restart.
RECONNECT_OPTIONS: dict[str, Any] = {
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 0.5,
    "allow_reconnect": True,
    "connect_timeout": 2,
}


@dataclass(frozen=True)
class NatsLogin:
    """A NATS user's credentials, read once, and the inbox its JWT names.

    Attributes:
        credentials: the ``.creds`` text; None: connect without (only a server without
            auth accepts that).
        inbox_prefix: ``_INBOX.<user>``, the only inbox the user may read (None: nats-py's
            default inbox).
    """

    credentials: str | None = None
    inbox_prefix: str | None = None

    @classmethod
    async def read(cls, credentials: str | Path | None) -> NatsLogin:
        """The login of ``credentials`` (a ``.creds`` file's path, or its text)."""
        if credentials is None:
            return cls()
        text = (
            await asyncio.to_thread(credentials.read_text)
            if isinstance(credentials, Path)
            else credentials
        )
        return cls(text, natsauth.inbox_prefix_of(text))

    def options(self) -> dict[str, Any]:
        """nats-py ``connect`` keyword arguments of this login."""
        options: dict[str, Any] = {}
        if self.credentials is not None:
            # Raw text, not a path: nats-py would otherwise re-read the file at each
            # reconnect, and a run worker's credentials are never in a file at all.
            options["user_credentials"] = RawCredentials(self.credentials)
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        return options

    @property
    def js_inbox_prefix(self) -> bytes:
        """Where a pull subscription's replies go (nats-py's ``inbox_prefix=``, dot ended)."""
        return f"{self.inbox_prefix or '_INBOX'}.".encode()


def nats_servers(url: str) -> list[str]:
    """The servers a NATS URL setting names: one URL, or several comma-separated.

    Raises:
        ValueError: no server in ``url``.
    """
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError(f"no NATS server in {url!r}")
    return servers


async def retry_first_connection(url: str, connect: Callable[[], Awaitable[T]]) -> T:
    """``connect()`` until it succeeds, backing off while the server is not reachable."""
    delay = 0.1
    while True:
        try:
            return await connect()
        except (OSError, nats.errors.NoServersError, TimeoutError) as err:
            log.warning("NATS at %s not reachable (%s); retrying in %.1fs", url, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def connect_nats(
    url: str,
    name: str,
    credentials: str | Path | None = None,
    *,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect to NATS, retrying the first connection until it succeeds.

    nats-py reconnects by itself after the first success; the first attempt is where a
    service started before NATS would otherwise die.

    Args:
        url: the server URL, or several comma-separated (the nodes of a cluster).
        name: the client name the server shows.
        credentials: the user's ``.creds`` (a file's path, or its text); None: connect
            without (only a server without auth accepts that). The user's replies go to
            the inbox its JWT names (``_INBOX.<user>``), the only one it may read.
        reconnected_cb: awaited each time nats-py has reconnected (after a NATS restart).
    """
    login = await NatsLogin.read(credentials)
    options = login.options()
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    servers = nats_servers(url)
    return await retry_first_connection(
        url, lambda: nats.connect(servers, name=name, **RECONNECT_OPTIONS, **options)
    )

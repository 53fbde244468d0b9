"""The one way a Tether process connects to NATS: with its user's credentials, its own
inbox, and retries of the first connection (nats-py reconnects by itself after that)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from tether.shared.nats import auth as natsauth

log = logging.getLogger(__name__)


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
        url: the server URL.
        name: the client name the server shows.
        credentials: the user's ``.creds`` (a file's path, or its text); None: connect
            without (only a server without auth accepts that). The user's replies go to
            the inbox its JWT names (``_INBOX.<user>``), the only one it may read.
        reconnected_cb: awaited each time nats-py has reconnected (after a NATS restart).
    """
    options: dict[str, Any] = {}
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    if credentials is not None:
        text = (
            await asyncio.to_thread(credentials.read_text)
            if isinstance(credentials, Path)
            else credentials
        )
        # Raw text, not a path: nats-py would otherwise re-read the file at each
        # reconnect, and a run worker's credentials are never in a file at all.
        options["user_credentials"] = RawCredentials(text)
        prefix = natsauth.inbox_prefix_of(text)
        if prefix is not None:
            options["inbox_prefix"] = prefix
    delay = 0.1
    while True:
        try:
            return await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                connect_timeout=2,
                **options,
            )
        except (OSError, nats.errors.NoServersError, TimeoutError) as err:
            log.warning("NATS at %s not reachable (%s); retrying in %.1fs", url, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

"""A FastStream NATS broker that connects as :func:`~tether.shared.nats.connection.connect_nats`
does: the service's own NATS user, its own inbox, reconnecting for ever, the first
connection retried.

Used by the services whose NATS handlers run on FastStream (the launcher's work consumer,
the poller's work publishers); they depend on ``tether-shared[broker]``, the extra that
brings ``faststream[nats]`` (tether-shared itself does not: no other service imports this
module). The broker declares no stream: a stream
is declared by its one owner (:mod:`tether.shared.nats.streams`), so every
:class:`~faststream.nats.JStream` given to it must be ``declare=False`` (:func:`bound_stream`).
"""

from __future__ import annotations

import logging

from faststream.nats import JStream, NatsBroker
from faststream.nats.security import NatsCredentials
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from tether.shared.nats.connection import (
    RECONNECT_OPTIONS,
    NatsLogin,
    nats_servers,
    retry_first_connection,
)
from tether.shared.nats.subjects import Stream

__all__ = ["bound_stream", "connect_broker", "make_broker"]

#: FastStream's own log lines go here: per message ("Received", "Processed") at DEBUG, its
#: task supervisor's at INFO ("callback for Task-12 is being executed..." at every stop).
#: Warnings and errors (a fetch loop restarted) only, unless the operator asks for more.
BROKER_LOGGER = logging.getLogger("tether.broker")
if BROKER_LOGGER.level == logging.NOTSET:
    BROKER_LOGGER.setLevel(logging.WARNING)


def bound_stream(stream: Stream) -> JStream:
    """``stream`` for a subscriber or publisher that binds to it, never declares it
    (declaring from a second service would overwrite the owner's limits; the roles'
    NATS permissions refuse it anyway)."""
    return JStream(str(stream), declare=False)


def make_broker(
    url: str, name: str, login: NatsLogin, *, graceful_timeout: float | None = None
) -> NatsBroker:
    """A broker (not connected yet) for ``login``'s user.

    Args:
        url: the NATS server, or several comma-separated (the nodes of a cluster).
        name: the client name the server shows.
        login: the user's credentials and inbox.
        graceful_timeout: how long stopping the broker waits for in-flight handlers
            before cancelling them.
    """
    return NatsBroker(
        nats_servers(url),
        name=name,
        security=(
            NatsCredentials(RawCredentials(login.credentials))
            if login.credentials is not None
            else None
        ),
        inbox_prefix=login.inbox_prefix or "_INBOX",
        graceful_timeout=graceful_timeout,
        logger=BROKER_LOGGER,
        log_level=logging.DEBUG,
        **RECONNECT_OPTIONS,
    )


async def connect_broker(broker: NatsBroker, url: str) -> NATS:
    """Connect ``broker``, retrying the first connection until it succeeds; its client."""
    return await retry_first_connection(url, broker.connect)

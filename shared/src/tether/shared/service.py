"""One lifecycle shape for every service, and the process entry point that drives it."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

import nats
from nats.aio.client import Client as NATS

log = logging.getLogger(__name__)


class Service(Protocol):
    """What every Tether service implements.

    ``run()`` works until ``shutdown()`` is called (from a signal handler or a test),
    then finishes or hands back its in-flight work within the graceful timeout.
    """

    async def run(self) -> None:
        """Serve until shut down."""
        ...

    def shutdown(self) -> None:
        """Ask the service to stop; idempotent and safe from a signal handler."""
        ...


async def serve(service: Service, *, graceful_shutdown_timeout: float = 10.0) -> None:
    """Run ``service`` until SIGTERM/SIGINT, then give it time to stop gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.shutdown)
    task = asyncio.ensure_future(service.run())
    try:
        await task
    except asyncio.CancelledError:
        service.shutdown()
        try:
            async with asyncio.timeout(graceful_shutdown_timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
        raise


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed.

    nats-py waits with ``asyncio.wait_for``, which on Python 3.11 can lose a cancellation
    that lands as the inner call completes; a periodic loop would then run forever after
    its TaskGroup asked it to stop. Loops call this once per round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def connect_nats(url: str, name: str) -> NATS:
    """Connect to NATS, retrying the first connection until it succeeds.

    nats-py reconnects by itself after the first success; the first attempt is where a
    service started before NATS would otherwise die.
    """
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
            )
        except (OSError, nats.errors.NoServersError, TimeoutError) as err:
            log.warning("NATS at %s not reachable (%s); retrying in %.1fs", url, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def setup_logging(level: str = "INFO") -> None:
    """Configure plain stderr logging for a service process."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP request drowns what matters; the spans carry every request anyway.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_service(service: Service, *, tracing_name: str, graceful_shutdown_timeout: float) -> None:
    """Process entry point of an agent service: tracing on, serve until SIGTERM, flush spans.

    Args:
        service: the service to run.
        tracing_name: OpenTelemetry ``service.name``, e.g. ``tether-eventrelay``.
        graceful_shutdown_timeout: seconds the service gets to stop after a signal.
    """
    from tether.shared import telemetry

    telemetry.configure_tracing(tracing_name)
    try:
        asyncio.run(serve(service, graceful_shutdown_timeout=graceful_shutdown_timeout))
    finally:
        telemetry.shutdown_tracing()

"""One lifecycle shape for every service, and the process entry point that drives it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from typing import Protocol

from tether.shared.runtime.health import HealthServer

log = logging.getLogger(__name__)


class Service(Protocol):
    """What every Tether service implements.

    ``run()`` works until ``shutdown()`` is called (from a signal handler or a test),
    then finishes or hands back its in-flight work within the graceful timeout.

    A service may also define ``ready() -> bool`` (connected and doing its job), which
    its ``/readyz`` endpoint reports; without it, a serving process counts as ready; and
    ``health_details() -> dict`` (e.g. its streams' fullness), which ``/readyz`` adds.
    """

    async def run(self) -> None:
        """Serve until shut down."""
        ...

    def shutdown(self) -> None:
        """Ask the service to stop; idempotent and safe from a signal handler."""
        ...


async def serve(
    service: Service,
    *,
    graceful_shutdown_timeout: float = 10.0,
    health: tuple[str, int] | None = None,
) -> None:
    """Run ``service`` until SIGTERM/SIGINT, then give it time to stop gracefully.

    Args:
        service: the service.
        graceful_shutdown_timeout: seconds it gets to stop after a signal.
        health: ``(host, port)`` of its ``/healthz`` and ``/readyz`` endpoint, if any.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.shutdown)
    probe: HealthServer | None = None
    if health is not None:
        probe = HealthServer(
            *health,
            ready=getattr(service, "ready", lambda: True),
            details=getattr(service, "health_details", None),
        )
        await probe.start()
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
    finally:
        if probe is not None:
            await probe.close()


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed.

    nats-py waits with ``asyncio.wait_for``, which on Python 3.11 can lose a cancellation
    that lands as the inner call completes; a periodic loop would then run forever after
    its TaskGroup asked it to stop. Loops call this once per round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


LOG_FORMAT_ENV = "TETHER_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the trace and span ids of the current span.

    A tracing backend links a log line to its trace by these ids; a log pipeline needs no
    parsing rules.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        from opentelemetry import trace

        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """Configure stderr logging for a service process.

    Args:
        level: the root log level.
        fmt: ``text`` (for people, the default) or ``json`` (for log pipelines); read
            from ``TETHER_LOG_FORMAT`` when not given.
    """
    fmt = (fmt or os.environ.get(LOG_FORMAT_ENV) or "text").lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"{LOG_FORMAT_ENV} must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler()
    if fmt == "json":
        formatter: logging.Formatter = JsonLogFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    # One line per HTTP request drowns what matters; the spans carry every request anyway.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_service(
    service: Service,
    *,
    tracing_name: str,
    graceful_shutdown_timeout: float,
    health: tuple[str, int] | None = None,
) -> None:
    """Process entry point of an agent service: tracing on, serve until SIGTERM, flush spans.

    Args:
        service: the service to run.
        tracing_name: OpenTelemetry ``service.name``, e.g. ``tether-eventrelay``.
        graceful_shutdown_timeout: seconds the service gets to stop after a signal.
        health: ``(host, port)`` of the health endpoints (``AgentSettings.health``).
    """
    from tether.shared.runtime import telemetry

    telemetry.configure_tracing(tracing_name)
    try:
        asyncio.run(
            serve(service, graceful_shutdown_timeout=graceful_shutdown_timeout, health=health)
        )
    finally:
        telemetry.shutdown_tracing()

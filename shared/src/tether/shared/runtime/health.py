"""Liveness and readiness endpoints of an agent service, for Kubernetes probes and compose
health checks: ``GET /healthz`` (the process serves) and ``GET /readyz`` (it does its job).

Bound to loopback by default: nothing connects into an agent from outside (DESIGN,
invariant 1). Hand-written on asyncio streams because two fixed GET routes do not justify a
web framework in every agent process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """Serves ``/healthz`` and ``/readyz`` until closed.

    Args:
        host: interface to bind (loopback unless a probe must reach it from elsewhere).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        ready: says whether the service is ready to do its job right now.
    """

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and serve in the background."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("health endpoints on http://%s:%d/healthz and /readyz", self._host, self.port)

    async def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                # Headers are read and ignored; a probe sends nothing that matters.
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            status, body = self._route(request_line.decode("latin-1").split())
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a probe that hangs up or stalls gets nothing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _route(self, parts: list[str]) -> tuple[int, dict[str, object]]:
        if len(parts) < 2:
            return 405, {"error": "malformed request line"}
        method, path = parts[0], parts[1].split("?")[0]
        if method != "GET":
            return 405, {"error": f"{method} not allowed"}
        if path == "/healthz":
            return 200, {"status": "alive"}
        if path == "/readyz":
            try:
                ready = self._ready()
            except Exception as err:  # noqa: BLE001 - a failing check means not ready
                return 503, {"status": "not ready", "error": repr(err)}
            return (200, {"status": "ready"}) if ready else (503, {"status": "not ready"})
        return 404, {"error": f"no route {path}"}

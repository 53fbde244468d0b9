"""Liveness and readiness endpoints of an agent service, for Kubernetes probes and compose
health checks: ``GET /healthz`` (the process serves) and ``GET /readyz`` (it does its job),
and its Prometheus metrics: ``GET /metrics`` (tether.shared.runtime.metrics).

``/readyz`` carries the service's details too (its streams' fullness, say): a service that
works but is close to a limit answers 200 with ``"status": "degraded"`` and the reasons,
so a probe keeps it in rotation and an operator (or an alert on the metrics) sees why.

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
from typing import Any

from tether.shared.runtime import metrics

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """Serves ``/healthz`` and ``/readyz`` until closed.

    Args:
        host: interface to bind (loopback unless a probe must reach it from elsewhere).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        ready: says whether the service is ready to do its job right now.
        details: what ``/readyz`` adds to its answer; a ``degraded`` entry (a list of
            reasons) makes a ready service answer ``degraded``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ready: Callable[[], bool],
        details: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._details = details
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
        log.info(
            "health endpoints on http://%s:%d/healthz, /readyz and /metrics", self._host, self.port
        )

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
            if isinstance(body, bytes):
                payload, content_type = body, metrics.CONTENT_TYPE_LATEST
            else:
                payload, content_type = json.dumps(body).encode(), "application/json"
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
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

    def _route(self, parts: list[str]) -> tuple[int, dict[str, object] | bytes]:
        if len(parts) < 2:
            return 405, {"error": "malformed request line"}
        method, path = parts[0], parts[1].split("?")[0]
        if method != "GET":
            return 405, {"error": f"{method} not allowed"}
        if path == "/healthz":
            return 200, {"status": "alive"}
        if path == "/readyz":
            return self._readiness()
        if path == "/metrics":
            return 200, metrics.render()
        return 404, {"error": f"no route {path}"}

    def _readiness(self) -> tuple[int, dict[str, object]]:
        try:
            ready = self._ready()
            details = self._details() if self._details is not None else {}
        except Exception as err:  # noqa: BLE001 - a failing check means not ready
            return 503, {"status": "not ready", "error": repr(err)}
        if not ready:
            return 503, {"status": "not ready", **details}
        return 200, {"status": "degraded" if details.get("degraded") else "ready", **details}

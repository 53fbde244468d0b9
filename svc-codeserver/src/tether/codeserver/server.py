"""The gRPC CodeServer servicer and the service that hosts it.

The location is loaded once, before the port is bound, so the ready line means the
server can answer. A location that fails to load still serves: Ping reports
``loaded=false`` with the error and GetSnapshot returns it, so a launcher can tell the
control plane why instead of crash-looping.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import IO

from grpc import aio
from tether.codeserver.loader import LoadedLocation
from tether.codeserver.settings import CodeServerSettings
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.convert import error_to_proto, snapshot_to_proto
from tether.shared.messages import CodeServerReady, ErrorInfo, encode

log = logging.getLogger(__name__)


class CodeServerServicer(pb_grpc.CodeServerServicer):
    """Answers launcher calls about one loaded (or failed) location."""

    def __init__(self, location: LoadedLocation) -> None:
        self._location = location
        self._load_error: pb.Error | None = None
        self._snapshot_reply: pb.GetSnapshotReply
        if location.error is not None:
            self._load_error = error_to_proto(location.error)
            self._snapshot_reply = pb.GetSnapshotReply(error=self._load_error)
        else:
            try:
                # Built once: the definitions do not change while the process lives.
                snapshot = snapshot_to_proto(location.snapshot())
                self._snapshot_reply = pb.GetSnapshotReply(snapshot=snapshot)
            except Exception as err:  # noqa: BLE001 - e.g. a config model whose schema fails
                self._load_error = error_to_proto(ErrorInfo.from_exception(err))
                self._snapshot_reply = pb.GetSnapshotReply(error=self._load_error)

    async def Ping(self, request: pb.PingRequest, context: aio.ServicerContext) -> pb.PingReply:  # noqa: N802
        """Liveness plus the load status of the location."""
        reply = pb.PingReply(
            echo=request.echo,
            location_name=self._location.config.name,
            loaded=self._load_error is None,
            pid=os.getpid(),
        )
        if self._load_error is not None:
            reply.load_error.CopyFrom(self._load_error)
        return reply

    async def GetSnapshot(  # noqa: N802
        self, request: pb.GetSnapshotRequest, context: aio.ServicerContext
    ) -> pb.GetSnapshotReply:
        """Everything the location defines, or its load error."""
        return self._snapshot_reply


def _add_health_service(server: aio.Server) -> None:
    """Register grpc.health.v1 when grpcio-health-checking is installed (optional)."""
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except ImportError:
        return
    servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)  # type: ignore[unused-coroutine]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)


class CodeServerService:
    """Lifecycle of a code server process: bind, announce readiness, serve until shutdown.

    Args:
        location: the loaded location to serve.
        settings: host, port, message size, graceful timeout.
        ready_stream: where the single CodeServerReady line is written once bound.
    """

    def __init__(
        self, location: LoadedLocation, settings: CodeServerSettings, ready_stream: IO[str]
    ) -> None:
        self._location = location
        self._settings = settings
        self._ready_stream = ready_stream
        self._stop = asyncio.Event()
        self.address: str | None = None

    async def run(self) -> None:
        """Serve until :meth:`shutdown`, then stop with the graceful timeout."""
        size = self._settings.max_message_bytes
        server = aio.server(
            options=[
                ("grpc.max_send_message_length", size),
                ("grpc.max_receive_message_length", size),
            ]
        )
        pb_grpc.add_CodeServerServicer_to_server(CodeServerServicer(self._location), server)
        _add_health_service(server)
        host = self._settings.host
        bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        port = server.add_insecure_port(f"{bind_host}:{self._settings.port}")
        if port == 0:
            raise OSError(f"could not bind {bind_host}:{self._settings.port}")
        await server.start()
        self.address = f"{bind_host}:{port}"
        ready = CodeServerReady(address=self.address, pid=os.getpid())
        # Exactly one line: the launcher reads it to learn where to connect.
        self._ready_stream.write(encode(ready).decode() + "\n")
        self._ready_stream.flush()
        log.info(
            "code server for location %r listening on %s (loaded=%s)",
            self._location.config.name,
            self.address,
            self._location.loaded,
        )
        try:
            await self._stop.wait()
        finally:
            await server.stop(grace=self._settings.graceful_shutdown_timeout)
            log.info("code server for location %r stopped", self._location.config.name)

    def shutdown(self) -> None:
        """Ask the server to stop (idempotent; safe from a signal handler)."""
        self._stop.set()

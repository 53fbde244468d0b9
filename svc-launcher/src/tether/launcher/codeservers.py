"""Keeping one code server per code location running, and talking to it over gRPC."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from tether.launcher.errors import LauncherError
from tether.launcher.substrate import CodeServerHandle, Substrate
from tether.shared import telemetry
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.convert import (
    channel_options,
    error_from_proto,
    partition_keys_from_proto,
    partition_run_config_from_proto,
    schedule_tick_from_proto,
    sensor_tick_from_proto,
    snapshot_from_proto,
    timestamp_to_proto,
)
from tether.shared.messages import (
    CodeServerStatus,
    ErrorInfo,
    EvaluateSchedulePayload,
    EvaluateSensorPayload,
    LocationConfig,
    LocationSnapshot,
    PartitionConfigPayload,
    PartitionKeysPayload,
    PartitionKeysResult,
    PartitionRunConfigResult,
    ScheduleTickResult,
    SensorTickResult,
)

log = logging.getLogger(__name__)


class CodeLocationLoadError(LauncherError):
    """The code server runs but the location's code failed to load (user-code error).

    Attributes:
        error: what the user code raised, as reported by the code server.
    """

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(f"{error.cls_name}: {error.message}")
        self.error = error


@dataclass
class CodeServerClient:
    """A gRPC channel to one code server.

    Args:
        handle: the code server.
        channel: an open ``grpc.aio`` channel to ``handle.address``.
    """

    handle: CodeServerHandle
    channel: grpc.aio.Channel

    @classmethod
    def connect(cls, handle: CodeServerHandle) -> CodeServerClient:
        """Open a channel to ``handle`` (lazily connected by grpc)."""
        # Snapshots of large locations exceed grpc's default 4 MB receive limit.
        return cls(handle, grpc.aio.insecure_channel(handle.address, options=channel_options()))

    async def get_snapshot(self, deadline_s: float) -> LocationSnapshot:
        """Everything the location defines.

        Raises:
            CodeLocationLoadError: the location's code failed to load.
            grpc.aio.AioRpcError: the call failed (unavailable, deadline exceeded...).
        """
        stub = pb_grpc.CodeServerStub(self.channel)
        reply = await stub.GetSnapshot(
            pb.GetSnapshotRequest(), timeout=deadline_s, metadata=_trace_metadata()
        )
        if reply.WhichOneof("result") == "error":
            raise CodeLocationLoadError(error_from_proto(reply.error))
        return snapshot_from_proto(reply.snapshot)

    async def evaluate_schedule(
        self, request: EvaluateSchedulePayload, deadline_s: float
    ) -> ScheduleTickResult:
        """Evaluate one schedule tick (a user-code error comes back in ``error``).

        Raises:
            grpc.aio.AioRpcError: the call failed (unavailable, deadline exceeded...).
        """
        stub = pb_grpc.CodeServerStub(self.channel)
        reply = await stub.EvaluateSchedule(
            pb.EvaluateScheduleRequest(
                repository_name=request.repository_name,
                schedule_name=request.schedule_name,
                scheduled_time=timestamp_to_proto(request.scheduled_timestamp),
            ),
            timeout=deadline_s,
            metadata=_trace_metadata(),
        )
        return schedule_tick_from_proto(request.schedule_name, request.scheduled_timestamp, reply)

    async def evaluate_sensor(
        self, request: EvaluateSensorPayload, deadline_s: float
    ) -> SensorTickResult:
        """Evaluate a sensor once (a user-code error comes back in ``error``).

        Raises:
            grpc.aio.AioRpcError: the call failed (unavailable, deadline exceeded...).
        """
        message = pb.EvaluateSensorRequest(
            repository_name=request.repository_name, sensor_name=request.sensor_name
        )
        if request.cursor is not None:
            message.cursor = request.cursor
        if request.last_run_key is not None:
            message.last_run_key = request.last_run_key
        if request.last_tick_timestamp is not None:
            message.last_tick_time.CopyFrom(timestamp_to_proto(request.last_tick_timestamp))
        if request.current_timestamp is not None:
            message.current_time.CopyFrom(timestamp_to_proto(request.current_timestamp))
        stub = pb_grpc.CodeServerStub(self.channel)
        reply = await stub.EvaluateSensor(message, timeout=deadline_s, metadata=_trace_metadata())
        return sensor_tick_from_proto(request.sensor_name, reply)

    async def partition_keys(
        self, request: PartitionKeysPayload, deadline_s: float
    ) -> PartitionKeysResult:
        """The keys of a partition set (a user-code error comes back in ``error``).

        Raises:
            grpc.aio.AioRpcError: the call failed (unavailable, deadline exceeded...).
        """
        message = pb.GetPartitionKeysRequest(
            repository_name=request.repository_name,
            partition_set_name=request.partition_set_name,
        )
        if request.current_timestamp is not None:
            message.current_time.CopyFrom(timestamp_to_proto(request.current_timestamp))
        stub = pb_grpc.CodeServerStub(self.channel)
        reply = await stub.GetPartitionKeys(message, timeout=deadline_s, metadata=_trace_metadata())
        return partition_keys_from_proto(request.partition_set_name, reply)

    async def partition_config(
        self, request: PartitionConfigPayload, deadline_s: float
    ) -> PartitionRunConfigResult:
        """Run config and tags of one partition (a user-code error comes back in ``error``).

        Raises:
            grpc.aio.AioRpcError: the call failed (unavailable, deadline exceeded...).
        """
        message = pb.GetPartitionRunConfigRequest(
            repository_name=request.repository_name,
            partition_set_name=request.partition_set_name,
            partition_key=request.partition_key,
        )
        if request.current_timestamp is not None:
            message.current_time.CopyFrom(timestamp_to_proto(request.current_timestamp))
        stub = pb_grpc.CodeServerStub(self.channel)
        reply = await stub.GetPartitionRunConfig(
            message, timeout=deadline_s, metadata=_trace_metadata()
        )
        return partition_run_config_from_proto(
            request.partition_set_name, request.partition_key, reply
        )

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


def _trace_metadata() -> tuple[tuple[str, str], ...]:
    # gRPC metadata keys are lowercase; W3C "traceparent" already is.
    return tuple(telemetry.inject({}).items())


class CodeServerRegistry:
    """Location name -> running code server, reconciled on each use (in memory for now).

    ``ensure`` starts the code server when missing, restarts it when its process died,
    and replaces it when the location's configuration changed. One lock per location
    keeps concurrent requests from starting two servers for the same location.

    Args:
        substrate: where code servers run.
    """

    def __init__(self, substrate: Substrate) -> None:
        self._substrate = substrate
        self._clients: dict[str, CodeServerClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._errors: dict[str, str] = {}

    async def ensure(self, location: LocationConfig) -> CodeServerClient:
        """Return a client of a running code server for ``location``.

        Raises:
            CodeServerStartError: the code server failed to start.
        """
        lock = self._locks.setdefault(location.name, asyncio.Lock())
        async with lock:
            current = self._clients.get(location.name)
            previous: CodeServerClient | None = None
            if current is not None:
                if current.handle.location == location and self._substrate.code_server_alive(
                    current.handle
                ):
                    return current
                if current.handle.location == location:
                    log.info("code server for %s died; replacing it", location.name)
                    await self._stop(location.name)
                else:
                    # Blue/green: the old server is stopped only once the new one is ready
                    # (and stays if the new config fails to start).
                    log.info("code server for %s: config changed; replacing it", location.name)
                    previous = current
            try:
                handle = await self._substrate.start_code_server(location)
            except LauncherError as err:
                self._errors[location.name] = str(err)
                raise
            self._errors.pop(location.name, None)
            client = CodeServerClient.connect(handle)
            self._clients[location.name] = client
            if previous is not None:
                await previous.close()
                await self._substrate.stop_code_server(previous.handle)
            return client

    async def invalidate(self, location_name: str) -> None:
        """Stop and forget ``location_name``'s code server (it stopped answering)."""
        lock = self._locks.setdefault(location_name, asyncio.Lock())
        async with lock:
            await self._stop(location_name)

    async def stop_all(self) -> None:
        """Stop every code server this registry started."""
        await asyncio.gather(*(self.invalidate(name) for name in list(self._clients)))

    async def detach_all(self) -> None:
        """Close every channel and forget the code servers, leaving them running."""
        for name in list(self._clients):
            lock = self._locks.setdefault(name, asyncio.Lock())
            async with lock:
                client = self._clients.pop(name, None)
                if client is not None:
                    await client.close()

    def statuses(self) -> list[CodeServerStatus]:
        """What a heartbeat reports of each code server."""
        out = [
            CodeServerStatus(
                location_name=name,
                state="RUNNING" if self._substrate.code_server_alive(c.handle) else "FAILED",
                address=c.handle.address,
                pid=c.handle.pid,
            )
            for name, c in self._clients.items()
        ]
        out += [
            CodeServerStatus(location_name=name, state="FAILED", error=error)
            for name, error in self._errors.items()
            if name not in self._clients
        ]
        return out

    async def _stop(self, location_name: str) -> None:
        client = self._clients.pop(location_name, None)
        if client is None:
            return
        await client.close()
        await self._substrate.stop_code_server(client.handle)

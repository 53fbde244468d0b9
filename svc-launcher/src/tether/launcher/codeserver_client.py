"""A gRPC client of one code server: every call presents the server's caller token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from tether.launcher.errors import LauncherError
from tether.launcher.substrate import CodeServerHandle
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import TLS_SERVER_NAME, bearer_metadata
from tether.shared.grpc.convert import (
    channel_options,
    error_from_proto,
    partition_keys_from_proto,
    partition_run_config_from_proto,
    run_record_to_proto,
    schedule_tick_from_proto,
    sensor_tick_from_proto,
    snapshot_from_proto,
    timestamp_to_proto,
)
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.snapshots import LocationSnapshot
from tether.shared.wire.work import (
    EvaluateSchedulePayload,
    EvaluateSensorPayload,
    PartitionConfigPayload,
    PartitionKeysPayload,
    PartitionKeysResult,
    PartitionRunConfigResult,
    ScheduleTickResult,
    SensorTickResult,
)


class _CodeServerStub(Protocol):
    """The RPCs the launcher calls, typed: grpc_tools writes no ``.pyi`` for the ``_grpc``
    module, so its ``CodeServerStub`` is untyped (each attribute is what
    ``grpc.aio.Channel.unary_unary`` returns)."""

    GetSnapshot: grpc.aio.UnaryUnaryMultiCallable[pb.GetSnapshotRequest, pb.GetSnapshotReply]
    EvaluateSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pb.EvaluateScheduleRequest, pb.EvaluateScheduleReply
    ]
    EvaluateSensor: grpc.aio.UnaryUnaryMultiCallable[
        pb.EvaluateSensorRequest, pb.EvaluateSensorReply
    ]
    GetPartitionKeys: grpc.aio.UnaryUnaryMultiCallable[
        pb.GetPartitionKeysRequest, pb.GetPartitionKeysReply
    ]
    GetPartitionRunConfig: grpc.aio.UnaryUnaryMultiCallable[
        pb.GetPartitionRunConfigRequest, pb.GetPartitionRunConfigReply
    ]
    Adopt: grpc.aio.UnaryUnaryMultiCallable[pb.AdoptRequest, pb.AdoptReply]


#: The generated stub's constructor under the typed view above.
_new_stub: Callable[[grpc.aio.Channel], _CodeServerStub] = pb_grpc.CodeServerStub


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
    """A gRPC channel to one code server; every call presents the server's token.

    Args:
        handle: the code server.
        channel: an open ``grpc.aio`` channel to ``handle.address``.
        token: the code server's caller token.
    """

    handle: CodeServerHandle
    channel: grpc.aio.Channel
    token: str

    @classmethod
    def connect(
        cls, handle: CodeServerHandle, token: str, tls_cert: bytes | None = None
    ) -> CodeServerClient:
        """Open a channel to ``handle`` (lazily connected by grpc).

        Args:
            handle: the code server.
            token: its caller token.
            tls_cert: its certificate (PEM), pinned as the only one trusted; None: the
                channel is plaintext (loopback, process substrate).
        """
        # Snapshots of large locations exceed grpc's default 4 MB receive limit.
        options: list[tuple[str, int | str]] = [*channel_options()]
        if tls_cert is None:
            channel = grpc.aio.insecure_channel(handle.address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=tls_cert)
            # The certificate names the code server, not its address (a pod IP...).
            options = [*options, ("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
            channel = grpc.aio.secure_channel(handle.address, credentials, options=options)
        return cls(handle, channel, token)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        # gRPC metadata keys are lowercase; W3C "traceparent" already is.
        return (*telemetry.inject({}).items(), *bearer_metadata(self.token))

    async def get_snapshot(self, deadline_s: float) -> LocationSnapshot:
        """Everything the location defines.

        Raises:
            CodeLocationLoadError: the location's code failed to load.
            grpc.aio.AioRpcError: the call failed (unavailable, deadline exceeded...).
        """
        stub = _new_stub(self.channel)
        reply = await stub.GetSnapshot(
            pb.GetSnapshotRequest(), timeout=deadline_s, metadata=self._metadata()
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
        stub = _new_stub(self.channel)
        reply = await stub.EvaluateSchedule(
            pb.EvaluateScheduleRequest(
                repository_name=request.repository_name,
                schedule_name=request.schedule_name,
                scheduled_time=timestamp_to_proto(request.scheduled_timestamp),
            ),
            timeout=deadline_s,
            metadata=self._metadata(),
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
        message.run_records.extend(run_record_to_proto(r) for r in request.run_records)
        stub = _new_stub(self.channel)
        reply = await stub.EvaluateSensor(message, timeout=deadline_s, metadata=self._metadata())
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
        stub = _new_stub(self.channel)
        reply = await stub.GetPartitionKeys(message, timeout=deadline_s, metadata=self._metadata())
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
        stub = _new_stub(self.channel)
        reply = await stub.GetPartitionRunConfig(
            message, timeout=deadline_s, metadata=self._metadata()
        )
        return partition_run_config_from_proto(
            request.partition_set_name, request.partition_key, reply
        )

    async def adopt(self, launcher_id: str, deadline_s: float) -> pb.AdoptReply:
        """Take the code server over (or renew that): an orphan serves on for its grace.

        Raises:
            grpc.aio.AioRpcError: the call failed (unavailable, deadline exceeded...).
        """
        stub = _new_stub(self.channel)
        reply = await stub.Adopt(
            pb.AdoptRequest(launcher_id=launcher_id),
            timeout=deadline_s,
            metadata=self._metadata(),
        )
        return reply

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

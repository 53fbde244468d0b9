"""The gRPC CodeServer servicer and the service that hosts it.

The location is loaded once, before the port is bound, so the ready line means the
server can answer. A location that fails to load still serves: Ping reports
``loaded=false`` with the error and GetSnapshot returns it, so a launcher can tell the
control plane why instead of crash-looping; the other calls fail with FAILED_PRECONDITION.

Schedule, sensor and partition functions run through :class:`UserCodeRunner` (thread
pool, deadline = the client's, capped by ``user_code_timeout``); what they raise comes
back as the reply's ``error``. Unknown names are NOT_FOUND statuses. The standard
``grpc.health.v1`` service is served too.

Every call must present the token the launcher gave the server (its environment,
``TETHER_CODESERVER_TOKEN``) as ``authorization: Bearer <token>`` metadata; others get
UNAUTHENTICATED (:class:`CallerAuthentication`). Only the health service is open.

Adopt lets a launcher take the server over after the launcher that started it died: the
server keeps serving while such calls renew its :class:`Lifeline` (see ``main.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tether.codeserver.loader import AmbiguousRepository, LoadedLocation, RepositoryNotFound
from tether.codeserver.settings import CodeServerSettings
from tether.codeserver.user_code import NotFound, UserCodeRunner
from tether.sdk import Definitions, RunRecord, RunRequest, UserCodeError
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import token_matches
from tether.shared.grpc.convert import (
    channel_options,
    error_to_proto,
    partition_run_config_to_proto,
    run_record_from_proto,
    schedule_tick_to_proto,
    sensor_tick_to_proto,
    snapshot_to_proto,
    timestamp_from_proto,
)
from tether.shared.wire.base import ErrorInfo, encode
from tether.shared.wire.locations import location_config_hash
from tether.shared.wire.process import CodeServerReady
from tether.shared.wire.work import (
    PartitionRunConfigResult,
    RunRequestInfo,
    RunStatusRecord,
    ScheduleTickResult,
    SensorTickResult,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds before the client's deadline at which user code is given up on.
_REPLY_MARGIN_S = 0.05

#: Full name of the CodeServer service, as the health service knows it.
CODESERVER_SERVICE = pb.DESCRIPTOR.services_by_name["CodeServer"].full_name


class Lifeline:
    """Whether an orphaned code server should keep serving: the adoption lease.

    While the launcher that started the server lives, nothing expires. Once it is gone
    (:meth:`orphan`), the server serves on for ``grace_s`` after the later of that moment
    and the last :meth:`adopt` (a launcher's Adopt call), then it should stop.

    Args:
        grace_s: seconds an orphan serves without adoption; None: forever.
    """

    def __init__(self, grace_s: float | None) -> None:
        self.grace_s = grace_s
        self.orphaned_at: float | None = None
        self.adopted_at: float | None = None
        self.adopted_by: str | None = None

    @property
    def orphaned(self) -> bool:
        """Whether the launcher that started this server is gone."""
        return self.orphaned_at is not None

    def orphan(self) -> None:
        """Note that the parent launcher is gone (the grace starts now)."""
        if self.orphaned_at is None:
            self.orphaned_at = time.monotonic()

    def adopt(self, launcher_id: str) -> None:
        """A launcher took the server over (or renewed): the grace starts again."""
        if launcher_id != self.adopted_by:
            log.info("adopted by launcher %s", launcher_id or "(unnamed)")
        self.adopted_at = time.monotonic()
        self.adopted_by = launcher_id

    def expired(self) -> bool:
        """Whether an orphan went unadopted for longer than its grace."""
        if self.orphaned_at is None or self.grace_s is None:
            return False
        last = max(self.orphaned_at, self.adopted_at or 0.0)
        return time.monotonic() - last > self.grace_s


class CodeServerServicer(pb_grpc.CodeServerServicer):
    """Answers launcher calls about one loaded (or failed) location.

    Args:
        location: the loaded (or failed) location.
        runner: runs user functions with deadlines (a default one if omitted).
        lifeline: the adoption lease that Adopt calls renew (one that never expires if
            omitted).
    """

    def __init__(
        self,
        location: LoadedLocation,
        runner: UserCodeRunner | None = None,
        lifeline: Lifeline | None = None,
    ) -> None:
        self._location = location
        self._runner = runner or UserCodeRunner(max_threads=4, default_timeout=60.0)
        self._lifeline = lifeline or Lifeline(None)
        self._config_hash = location_config_hash(location.config)
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

    async def Adopt(self, request: pb.AdoptRequest, context: aio.ServicerContext) -> pb.AdoptReply:  # noqa: N802
        """A launcher takes this server over (or renews): an orphan's grace starts again."""
        self._lifeline.adopt(request.launcher_id)
        return pb.AdoptReply(
            pid=os.getpid(),
            location_name=self._location.config.name,
            config_hash=self._config_hash,
            orphaned=self._lifeline.orphaned,
            orphan_grace_s=self._lifeline.grace_s or 0.0,
        )

    async def GetSnapshot(  # noqa: N802
        self, request: pb.GetSnapshotRequest, context: aio.ServicerContext
    ) -> pb.GetSnapshotReply:
        """Everything the location defines, or its load error."""
        return self._snapshot_reply

    async def _definitions(self, repository_name: str, context: aio.ServicerContext) -> Definitions:
        """The repository a request names, or abort the call with the right status."""
        if self._location.definitions is None or self._load_error is not None:
            message = self._load_error.message if self._load_error is not None else "not loaded"
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"location {self._location.config.name!r} did not load: {message}",
            )
        try:
            return self._location.repository(repository_name or None)
        except RepositoryNotFound as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except AmbiguousRepository as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        raise AssertionError("unreachable")  # abort() raises

    async def _user_call(self, fn: Callable[[], T], context: aio.ServicerContext) -> T | ErrorInfo:
        """Run user code under the call's deadline; unknown names abort with NOT_FOUND."""
        remaining = context.time_remaining()
        if remaining is not None:
            # Answer a little before the client gives up, so it gets the structured
            # timeout error rather than a bare DEADLINE_EXCEEDED.
            remaining = max(remaining - _REPLY_MARGIN_S, 0.0)
        try:
            return await self._runner.call(fn, remaining)
        except NotFound as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
            raise AssertionError("unreachable") from err

    @staticmethod
    async def _time(
        request: Any, field: str, context: aio.ServicerContext, *, required: bool = False
    ) -> datetime | None:
        if not request.HasField(field):
            if required:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is required")
            return None
        return datetime.fromtimestamp(timestamp_from_proto(getattr(request, field)), UTC)

    async def GetPartitionKeys(  # noqa: N802
        self, request: pb.GetPartitionKeysRequest, context: aio.ServicerContext
    ) -> pb.GetPartitionKeysReply:
        """The keys of a partition set at ``current_time`` (default now)."""
        defs = await self._definitions(request.repository_name, context)
        now = await self._time(request, "current_time", context)
        name = request.partition_set_name
        result = await self._user_call(lambda: defs.partition_keys(name, now), context)
        if isinstance(result, ErrorInfo):
            return pb.GetPartitionKeysReply(error=error_to_proto(result))
        return pb.GetPartitionKeysReply(partition_keys=pb.PartitionKeys(keys=result))

    async def GetPartitionRunConfig(  # noqa: N802
        self, request: pb.GetPartitionRunConfigRequest, context: aio.ServicerContext
    ) -> pb.GetPartitionRunConfigReply:
        """Run config and tags of one partition."""
        defs = await self._definitions(request.repository_name, context)
        now = await self._time(request, "current_time", context)
        name, key = request.partition_set_name, request.partition_key
        result = await self._user_call(lambda: defs.partition_run(name, key, now), context)
        if isinstance(result, ErrorInfo):
            out = PartitionRunConfigResult(partition_set_name=name, partition_key=key, error=result)
        else:
            out = PartitionRunConfigResult(
                partition_set_name=name,
                partition_key=key,
                run_config=result.run_config,
                tags=result.tags,
            )
        return _checked(lambda: partition_run_config_to_proto(out), pb.GetPartitionRunConfigReply)

    async def EvaluateSchedule(  # noqa: N802
        self, request: pb.EvaluateScheduleRequest, context: aio.ServicerContext
    ) -> pb.EvaluateScheduleReply:
        """Evaluate a schedule's tick at ``scheduled_time``."""
        defs = await self._definitions(request.repository_name, context)
        when = await self._time(request, "scheduled_time", context, required=True)
        assert when is not None
        name = request.schedule_name
        result = await self._user_call(lambda: defs.evaluate_schedule(name, when), context)
        if isinstance(result, ErrorInfo):
            out = ScheduleTickResult(
                schedule_name=name, scheduled_timestamp=when.timestamp(), error=result
            )
        else:
            out = ScheduleTickResult(
                schedule_name=name,
                scheduled_timestamp=when.timestamp(),
                run_requests=[_request_info(r) for r in result.run_requests],
                skip_reason=result.skip_reason,
                next_tick_timestamp=result.next_tick.timestamp() if result.next_tick else None,
            )
        return _checked(lambda: schedule_tick_to_proto(out), pb.EvaluateScheduleReply)

    async def EvaluateSensor(  # noqa: N802
        self, request: pb.EvaluateSensorRequest, context: aio.ServicerContext
    ) -> pb.EvaluateSensorReply:
        """Evaluate a sensor once with its cursor, last tick time and last run key."""
        defs = await self._definitions(request.repository_name, context)
        last_tick = await self._time(request, "last_tick_time", context)
        now = await self._time(request, "current_time", context)
        name = request.sensor_name
        cursor = request.cursor if request.HasField("cursor") else None
        last_run_key = request.last_run_key if request.HasField("last_run_key") else None
        try:
            records = [_run_record(run_record_from_proto(r)) for r in request.run_records]
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad run record: {err}")
        result = await self._user_call(
            lambda: defs.evaluate_sensor(
                name,
                cursor=cursor,
                last_tick_time=last_tick,
                last_run_key=last_run_key,
                current_time=now,
                location_name=self._location.config.name,
                run_records=records,
            ),
            context,
        )
        if isinstance(result, ErrorInfo):
            out = SensorTickResult(sensor_name=name, error=result)
        else:
            out = SensorTickResult(
                sensor_name=name,
                run_requests=[_request_info(r) for r in result.run_requests],
                skip_reason=result.skip_reason,
                cursor=result.cursor,
            )
        return _checked(lambda: sensor_tick_to_proto(out), pb.EvaluateSensorReply)


def _when(epoch_seconds: float | None) -> datetime | None:
    return None if epoch_seconds is None else datetime.fromtimestamp(epoch_seconds, UTC)


def _run_record(record: RunStatusRecord) -> RunRecord:
    """The SDK's view of a status change the control plane sent."""
    return RunRecord(
        run_id=record.run_id,
        status=record.status,
        job_name=record.job_name,
        location_name=record.location_name,
        repository_name=record.repository_name,
        tags=dict(record.tags),
        error_message=record.error_message,
        changed_time=datetime.fromtimestamp(record.changed_timestamp, UTC),
        start_time=_when(record.start_timestamp),
        end_time=_when(record.end_timestamp),
        seq=record.seq,
    )


def _request_info(request: RunRequest) -> RunRequestInfo:
    assert request.job_name is not None  # resolved by the SDK
    return RunRequestInfo(
        job_name=request.job_name,
        run_key=request.run_key,
        run_config=dict(request.run_config),
        tags=dict(request.tags),
        partition_key=request.partition_key,
    )


R = TypeVar("R", pb.EvaluateScheduleReply, pb.EvaluateSensorReply, pb.GetPartitionRunConfigReply)


def _checked(build: Callable[[], R], reply_type: type[R]) -> R:
    """Build a reply; a user value that cannot travel (run config that is not JSON) is an error.

    Run config is user data: a ``datetime`` or a set in it fails the Struct conversion, and
    that is the user's mistake to report, not a reason to fail the call.
    """
    try:
        return build()
    except (ValueError, TypeError, AttributeError) as err:
        wrapped = UserCodeError(
            "tick", "reply", f"returned run config or tags that are not JSON: {err}"
        )
        wrapped.__cause__ = err
        return reply_type(error=error_to_proto(ErrorInfo.from_exception(wrapped)))


class CallerAuthentication(aio.ServerInterceptor):
    """Refuses every call that does not present the server's token (UNAUTHENTICATED).

    The token is one per code server, known only to its launcher: a run worker, another
    location's code or anyone else who reaches the port cannot call it. The standard
    ``grpc.health.v1`` service is exempt (it says SERVING and nothing else), so that
    probes which cannot send metadata, such as the kubelet's, still work.

    Args:
        token: the token callers must present (``authorization: Bearer <token>``).
    """

    _EXEMPT_PREFIX = "/grpc.health.v1.Health/"

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("a code server needs a non-empty caller token")
        self._token = token
        # No (de)serializers: the refusal never reads the request nor writes a reply.
        self._refuse: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
            self._unauthenticated
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Pass the call on if it presents the token, else refuse it."""
        method = handler_call_details.method or ""
        if method.startswith(self._EXEMPT_PREFIX) or token_matches(
            handler_call_details.invocation_metadata, self._token
        ):
            return await continuation(handler_call_details)
        log.warning("refused an unauthenticated call of %s", method)
        return self._refuse

    @staticmethod
    async def _unauthenticated(request: object, context: aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "this code server answers only the launcher that started it",
        )


async def _add_health_service(server: aio.Server) -> health_aio.HealthServicer:
    """Register the standard grpc.health.v1 service, SERVING for the server and CodeServer.

    A location that failed to load still reports SERVING: the server answers (Ping says
    why the code did not load), and a probe that restarted it would only crash-loop.
    """
    servicer = health_aio.HealthServicer()
    for service in ("", CODESERVER_SERVICE):
        await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


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
        #: The adoption lease (see :class:`Lifeline`), watched by the process entry.
        self.lifeline = Lifeline(settings.effective_orphan_grace())

    async def run(self) -> None:
        """Serve until :meth:`shutdown`, then stop with the graceful timeout."""
        token = self._settings.token.get_secret_value() if self._settings.token else ""
        server = aio.server(
            interceptors=[CallerAuthentication(token)],
            options=channel_options(self._settings.max_message_bytes),
        )
        runner = UserCodeRunner(
            max_threads=self._settings.user_code_threads,
            default_timeout=self._settings.user_code_timeout,
        )
        pb_grpc.add_CodeServerServicer_to_server(
            CodeServerServicer(self._location, runner, self.lifeline), server
        )
        health = await _add_health_service(server)
        host = self._settings.host
        bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        target = f"{bind_host}:{self._settings.port}"
        if self._settings.tls_cert is not None and self._settings.tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [
                    (
                        self._settings.tls_key.get_secret_value().encode(),
                        self._settings.tls_cert.encode(),
                    )
                ]
            )
            port = server.add_secure_port(target, credentials)
        else:
            port = server.add_insecure_port(target)
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
            # Probes see NOT_SERVING while in-flight calls finish.
            await health.enter_graceful_shutdown()
            await server.stop(grace=self._settings.graceful_shutdown_timeout)
            log.info("code server for location %r stopped", self._location.config.name)

    def shutdown(self) -> None:
        """Ask the server to stop (idempotent; safe from a signal handler)."""
        self._stop.set()

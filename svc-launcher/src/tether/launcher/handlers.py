"""What the launcher does with each kind of work item."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from pydantic import BaseModel, ValidationError
from tether.launcher import metrics
from tether.launcher.codeserver_client import CodeLocationLoadError, CodeServerClient
from tether.launcher.codeservers import CodeServerRegistry
from tether.launcher.domains import NotOwnerError
from tether.launcher.errors import (
    CodeServerStartError,
    LauncherError,
    RunLaunchError,
    RunWorkerError,
    UnsupportedWorkError,
)
from tether.launcher.heartbeats import Heartbeat
from tether.launcher.publishing import Publisher
from tether.launcher.runcreds import RunCredentials
from tether.launcher.runs import (
    ClaimEntry,
    ClaimLostError,
    RunClaim,
    RunClaims,
    claimer_fields,
    claimer_is_dead,
)
from tether.launcher.settings import LauncherSettings
from tether.launcher.substrate import BoundedStarts, RunWorkerHandle, Substrate, WorkerRecord
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.process import INTERRUPT_AFTER_ENV, ExecuteRunArgs
from tether.shared.wire.work import (
    LaunchRunPayload,
    LoadLocationPayload,
    LocationStopped,
    NoPayload,
    ReportKind,
    RunHealth,
    RunHealthPayload,
    RunLaunched,
    RunTerminated,
    RunWorkerExited,
    TerminateRunPayload,
    WorkItem,
    WorkKind,
    WorkResult,
)
from tether.shared.wire.workspecs import (
    REPORT_SPECS,
    WORK_SPECS,
    ServedBy,
    require_handlers,
)

log = logging.getLogger(__name__)

P = TypeVar("P", bound=BaseModel)
Q = TypeVar("Q", bound=BaseModel)

#: What serves one kind: the item, and its payload parsed into the kind's payload model.
Handler = Callable[[WorkItem, Any], Awaitable[None]]

#: A code-server query: the client call answering a payload within a deadline, with a
#: result model whose ``error`` is set when user code failed.
Query = Callable[[CodeServerClient, Q, float], Awaitable[BaseModel]]

#: Call failures that a new code server cures: gone, or not accepting our token (an adopted
#: container started by a launcher with another code-server secret).
_REPLACE_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED})


class ClaimHeldError(LauncherError):
    """A launch whose run another live launcher claimed but has not started yet: hand the
    message back, to look again later (it may die before it starts the worker).

    Attributes:
        run_id: the run.
        holder: the claim.
    """

    def __init__(self, run_id: str, holder: RunClaim) -> None:
        super().__init__(
            f"run {run_id} is claimed by live launcher {holder.launcher} "
            f"(heartbeat {holder.heartbeat}), not started yet"
        )
        self.run_id = run_id
        self.holder = holder


def _failed(item: WorkItem, err: BaseException | ErrorInfo) -> WorkResult:
    error = err if isinstance(err, ErrorInfo) else ErrorInfo.from_exception(err)
    return WorkResult(
        id=item.id,
        work_item_id=item.id,
        kind=item.kind,
        ok=False,
        error=error,
        traceparent=telemetry.current_traceparent(),
    )


def _rpc_error(err: grpc.aio.AioRpcError) -> ErrorInfo:
    # FAILED_PRECONDITION: the location did not load; NOT_FOUND: no such schedule/sensor/
    # partition set; DEADLINE_EXCEEDED: user code too slow. All are reported, none retried.
    return ErrorInfo(
        cls_name="grpc.aio.AioRpcError",
        message=f"code server call failed: {err.code().name}: {err.details()}",
    )


def _succeeded(item: WorkItem, answer: BaseModel) -> WorkResult:
    return WorkResult(
        id=item.id,
        work_item_id=item.id,
        kind=item.kind,
        ok=True,
        payload=WORK_SPECS[item.kind].result_json(answer),
        traceparent=telemetry.current_traceparent(),
    )


class WorkHandlers:
    """Handles work items; every outcome, good or bad, becomes a published WorkResult.

    Exceptions escape only for infrastructure failures (NATS, the KV bucket), so the
    consumer can redeliver the message.

    Args:
        settings: launcher settings.
        substrate: where code servers and run workers run.
        registry: the code servers of this launcher.
        claims: the run-claims bucket.
        publisher: results publisher.
        heartbeat: this launcher's heartbeat, named in its run claims (None: claims
            name none, and only the pid tells whether their claimer died).
    """

    def __init__(
        self,
        settings: LauncherSettings,
        substrate: Substrate[Any, Any],
        registry: CodeServerRegistry,
        claims: RunClaims,
        publisher: Publisher,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._settings = settings
        self._heartbeat = heartbeat
        self._substrate = substrate
        self._registry = registry
        self._claims = claims
        self._publisher = publisher
        self._run_credentials = RunCredentials.from_settings(settings)
        self._domain: str | None = settings.domain
        self._runs: dict[str, RunWorkerHandle] = {}
        self._monitors: set[asyncio.Task[None]] = set()
        #: Tells sibling launcher replicas that a location was removed (set by the service).
        self._on_location_stopped: Callable[[str], Awaitable[None]] | None = None
        #: One handler per kind the specs say launchers serve (refuses to start without).
        self._handlers: Mapping[WorkKind, Handler] = require_handlers(
            ServedBy.LAUNCHER,
            {
                WorkKind.LOAD_LOCATION: self.load_location,
                WorkKind.STOP_LOCATION: self.stop_location,
                WorkKind.LAUNCH_RUN: self.launch_run,
                WorkKind.TERMINATE_RUN: self.terminate_run,
                WorkKind.CHECK_RUN_HEALTH: self.check_run_health,
                WorkKind.EVALUATE_SCHEDULE: self._query(CodeServerClient.evaluate_schedule),
                WorkKind.EVALUATE_SENSOR: self._query(CodeServerClient.evaluate_sensor),
                WorkKind.GET_PARTITION_KEYS: self._query(CodeServerClient.partition_keys),
                WorkKind.GET_PARTITION_CONFIG: self._query(CodeServerClient.partition_config),
            },
        )

    @property
    def domain(self) -> str:
        """The launcher domain of this launcher (``settings.domain``, else its substrate's)."""
        if self._domain is None:
            self._domain = self._substrate.run_domain()
        return self._domain

    @property
    def served_kinds(self) -> frozenset[WorkKind]:
        """The kinds of work item this launcher has a handler for."""
        return frozenset(self._handlers)

    def on_location_stopped(self, notify: Callable[[str], Awaitable[None]]) -> None:
        """Call ``notify(location_name)`` after serving a ``stop_location`` work item."""
        self._on_location_stopped = notify

    async def handle(self, item: WorkItem) -> None:
        """Handle one work item (inside the caller's span) with its kind's handler."""
        metrics.WORK_ITEMS.labels(self._substrate.name, str(item.kind)).inc()
        handler = self._handlers.get(item.kind)
        if handler is None:
            # Declared for the wire, served by nobody yet (see WORK_SPECS).
            error = UnsupportedWorkError(
                f"the {self._substrate.name} launcher cannot handle {item.kind} yet"
            )
            await self._publisher.publish_result(_failed(item, error))
            return
        try:
            payload = WORK_SPECS[item.kind].payload_of(item)
        except ValidationError as err:
            await self._publisher.publish_result(_failed(item, err))
            return
        await handler(item, payload)

    async def stop_location(self, item: WorkItem, _: NoPayload) -> None:
        """The location was removed: stop its code server here and tell the siblings."""
        stopped = await self.forget_location(item.location.name)
        if self._on_location_stopped is not None:
            await self._on_location_stopped(item.location.name)
        await self._publisher.publish_result(_succeeded(item, LocationStopped(stopped=stopped)))

    async def forget_location(self, location_name: str) -> bool:
        """Stop ``location_name``'s code server and fork server, if this launcher has them.

        Runs already started keep running to their end.
        """
        stopped = await self._registry.remove(location_name)
        await self._substrate.remove_location(location_name)
        if stopped:
            log.info("stopped the code server of removed location %s", location_name)
        return stopped

    async def load_location(self, item: WorkItem, payload: LoadLocationPayload) -> None:
        """Ensure the location's code server (a new one when the payload asks to restart:
        a reload re-imports the user's code) and publish its snapshot (or why not)."""
        deadline = self._settings.grpc_deadline_s
        try:
            snapshot = await self._with_code_server(
                item, lambda client: client.get_snapshot(deadline), restart=payload.restart
            )
        except CodeLocationLoadError as err:
            result = _failed(item, err.error)
        except CodeServerStartError as err:
            result = _failed(item, err)
        except grpc.aio.AioRpcError as err:
            result = _failed(
                item,
                ErrorInfo(
                    cls_name="grpc.aio.AioRpcError",
                    message=f"code server call failed: {err.code().name}: {err.details()}",
                ),
            )
        else:
            # Compressed when large (the spec's codec): a big location's snapshot exceeds
            # NATS's max_payload.
            result = _succeeded(item, snapshot)
        await self._publisher.publish_result(result)

    def _query(self, ask: Query[Q]) -> Handler:
        """The handler of a code-server query answered by client call ``ask``."""

        async def handle(item: WorkItem, payload: Q) -> None:
            deadline = self._settings.grpc_deadline_s
            await self.query_code_server(item, lambda client: ask(client, payload, deadline))

        return handle

    async def query_code_server(
        self, item: WorkItem, call: Callable[[CodeServerClient], Awaitable[BaseModel]]
    ) -> None:
        """Answer a schedule, sensor or partition query from the location's code server.

        The result payload is the query's result model (ScheduleTickResult, ...). A user-code
        error (the function raised, timed out, or the location failed to load) makes a
        failed result whose ``error`` says what the user's code did; nothing here raises
        for it. A code server still starting makes the call wait for it (one lock per
        location in the registry), within this work item's ack keep-alive.
        """
        try:
            answer = await self._with_code_server(item, call)
        except CodeServerStartError as err:
            result = _failed(item, err)
        except grpc.aio.AioRpcError as err:
            result = _failed(item, _rpc_error(err))
        else:
            error = getattr(answer, "error", None)
            result = _succeeded(item, answer)
            if error is not None:
                # Keep the typed result too: the control plane records it on the tick.
                result = _failed(item, error).model_copy(update={"payload": result.payload})
        await self._publisher.publish_result(result)

    async def _with_code_server(
        self,
        item: WorkItem,
        call: Callable[[CodeServerClient], Awaitable[P]],
        *,
        restart: bool = False,
    ) -> P:
        client = await self._registry.ensure(item.location, restart=restart)
        try:
            return await call(client)
        except grpc.aio.AioRpcError as err:
            if err.code() not in _REPLACE_ON:
                raise
            # The server went away between the liveness check and the call, or was
            # started with another code-server secret: one restart.
            log.info("code server for %s %s; restarting it", item.location.name, err.code())
            await self._registry.invalidate(item.location.name)
            client = await self._registry.ensure(item.location)
            return await call(client)

    async def launch_run(self, item: WorkItem, payload: LaunchRunPayload) -> None:
        """Claim the run (at most once across replicas), spawn its worker, report it.

        Raises:
            ClaimHeldError: a live launcher holds the run's claim but has not started
                its worker (look again later).
        """
        arrived = time.monotonic()
        claim = RunClaim(
            run_id=payload.run_id,
            work_item_id=item.id,
            launcher=f"{self._settings.agent_id}/{self._substrate.name}",
            domain=self.domain,
            heartbeat=self._heartbeat.key if self._heartbeat is not None else None,
            **claimer_fields(),
        )
        held = await self._claims.claim(claim)
        if held is None:
            log.info("claim of run %s vanished while claiming; leaving it", payload.run_id)
            return
        if not held.ours:
            held = await self._take_over_or_skip(item, held, claim)
            if held is None:
                metrics.LAUNCHES.labels(self._substrate.name, "skipped").inc()
                return
        await self._start_run(item, payload, held, arrived)

    async def _take_over_or_skip(
        self, item: WorkItem, existing: ClaimEntry, claim: RunClaim
    ) -> ClaimEntry | None:
        """What to do with a run someone claimed: take over the unlaunched claim of a
        dead launcher (the entry now ours), or nothing (None), republishing our own
        earlier launch's result.

        Raises:
            ClaimHeldError: a live launcher holds it unlaunched.
        """
        found = existing.claim
        heartbeats = self._heartbeat.heartbeats if self._heartbeat is not None else None
        if await claimer_is_dead(found, heartbeats):
            taken = await self._claims.take_over(existing, claim)
            if taken is not None:
                metrics.TAKEOVERS.labels(self._substrate.name).inc()
                # Its launcher died between claiming and starting the worker (e.g. while
                # the launch waited for a cold-start slot): nothing runs it, so here.
                log.warning(
                    "run %s was claimed by %s (pid %s, heartbeat %s), which is gone before "
                    "starting it; launching it here",
                    claim.run_id,
                    found.launcher,
                    found.launcher_pid,
                    found.heartbeat,
                )
                return taken
            log.info("run %s was taken over by another launcher first", claim.run_id)
            return None
        if found.work_item_id == item.id and found.launched:
            # Our own earlier delivery launched it and may have died before its result
            # was published: publish it again (same id, so deduplicated downstream).
            again = RunLaunched(run_id=claim.run_id, pid=found.pid, owner=found.domain)
            await self._publisher.publish_result(_succeeded(item, again))
        elif not found.launched and not found.starting and found.heartbeat is not None:
            # Its claimer lives (its heartbeat is fresh) and may still start it, or die
            # first: look again once a dead claimer's heartbeat would have expired.
            raise ClaimHeldError(claim.run_id, found)
        log.info(
            "run %s already claimed by %s (item %s, %s); skipping",
            claim.run_id,
            found.launcher,
            found.work_item_id,
            "launched" if found.launched else "starting" if found.starting else "not started",
        )
        return None

    async def _start_run(
        self, item: WorkItem, payload: LaunchRunPayload, held: ClaimEntry, arrived: float
    ) -> None:
        """Start the worker of the run whose claim ``held`` is ours, and report it
        (``arrived``: the item's arrival, on the monotonic clock)."""
        substrate = self._substrate.name
        claim = held.claim
        traceparent = telemetry.current_traceparent()
        args = ExecuteRunArgs(
            location=item.location,
            run=payload,
            nats_url=self._settings.nats_url,
            traceparent=traceparent,
        )
        env = {telemetry.TRACEPARENT_ENV: traceparent} if traceparent else {}
        # The run's own NATS user, in the environment (never in argv).
        env |= self._run_credentials.env_for(payload.run_id)
        # A termination's one SIGTERM stops it starting ops; half the grace later it
        # interrupts its op itself (cleanup runs), before the SIGKILL at the end.
        if self._settings.terminate_grace_s > 0:
            env[INTERRUPT_AFTER_ENV] = f"{self._settings.terminate_grace_s / 2:g}"
        started: list[ClaimEntry] = []

        async def go_ahead() -> None:
            # Right before the worker starts (after any wait for a start slot): mark the
            # claim starting by compare-and-set, which fails if it was taken over.
            if not started:
                started.append(await self._claims.start(held))

        try:
            if isinstance(self._substrate, BoundedStarts):
                handle = await self._substrate.launch_run_after(args, env, go_ahead)
            else:
                await go_ahead()
                handle = await self._substrate.launch_run(args, env)
        except ClaimLostError as err:
            # Another launcher took it over while the launch waited (this one looked
            # dead: its heartbeat could not be refreshed); that one launches it.
            log.warning("not launching run %s: %s", payload.run_id, err)
            metrics.LAUNCHES.labels(substrate, "lost").inc()
            return
        except RunLaunchError as err:
            metrics.LAUNCHES.labels(substrate, "failed").inc()
            await self._publisher.publish_result(_failed(item, err))
            return
        metrics.LAUNCHES.labels(substrate, "launched").inc()
        metrics.LAUNCH_SECONDS.labels(substrate, "warm" if handle.warm else "cold").observe(
            time.monotonic() - arrived
        )
        self._runs[payload.run_id] = handle
        metrics.RUN_WORKERS.labels(substrate).set(len(self._runs))
        await self._claims.record(
            (started[0].claim if started else claim).model_copy(
                update={
                    "pid": handle.pid,
                    "pid_start": handle.pid_start,
                    "worker_id": handle.worker_id,
                }
            )
        )
        log.info(
            "launched run %s (pid %s, %s)",
            payload.run_id,
            handle.pid,
            "warm" if handle.warm else "cold",
        )
        result = RunLaunched(
            run_id=payload.run_id, pid=handle.pid, warm=handle.warm, owner=self.domain
        )
        await self._publisher.publish_result(_succeeded(item, result))
        task = asyncio.create_task(self._monitor(item, handle, traceparent))
        self._monitors.add(task)
        task.add_done_callback(self._monitors.discard)

    async def _monitor(
        self, item: WorkItem, handle: RunWorkerHandle, traceparent: str | None
    ) -> None:
        exit_code = await self._substrate.wait_run(handle)
        self._runs.pop(handle.run_id, None)
        metrics.RUN_WORKERS.labels(self._substrate.name).set(len(self._runs))
        log.info("run worker of %s exited with %d", handle.run_id, exit_code)
        with telemetry.span_from(
            "launcher.run_worker_exited", traceparent, scope="tether.launcher", run_id=handle.run_id
        ):
            report = REPORT_SPECS[ReportKind.RUN_WORKER_EXITED]
            result = WorkResult(
                id=report.report_id(item.id),
                work_item_id=item.id,
                kind=report.kind,
                ok=exit_code == 0,
                payload=report.result_json(
                    RunWorkerExited(run_id=handle.run_id, exit_code=exit_code)
                ),
                # What the substrate saw beyond the code (a pod that could not be
                # created): the run's ENGINE_ERROR shows it.
                error=(
                    None
                    if handle.exit_error is None
                    else ErrorInfo.from_exception(RunWorkerError(handle.exit_error))
                ),
                traceparent=telemetry.current_traceparent(),
            )
            try:
                await self._publisher.publish_result(result)
            except Exception:
                log.exception("could not report the exit of run %s", handle.run_id)

    async def terminate_run(self, item: WorkItem, payload: TerminateRunPayload) -> None:
        """Interrupt a run worker (SIGTERM, SIGKILL after the grace period).

        Raises:
            NotOwnerError: the run is another launcher domain's (hand the item back).
        """
        handle = await self._find_owned_run(payload.run_id, payload.owner)
        signalled = False
        if handle is not None:
            signalled = await self._substrate.terminate_run(
                handle, self._settings.terminate_grace_s
            )
        log.info(
            "terminate run %s: %s", payload.run_id, "signalled" if signalled else "not running"
        )
        terminated = RunTerminated(run_id=payload.run_id, signalled=signalled)
        await self._publisher.publish_result(_succeeded(item, terminated))

    async def check_run_health(self, item: WorkItem, payload: RunHealthPayload) -> None:
        """Report whether a run's worker still runs (the control plane's run monitor asks).

        Raises:
            NotOwnerError: the run is another launcher domain's (hand the item back).
        """
        handle = await self._find_owned_run(payload.run_id, payload.owner)
        alive = handle is not None and await self._substrate.run_alive(handle)
        await self._publisher.publish_result(
            _succeeded(item, RunHealth(run_id=payload.run_id, alive=alive))
        )

    async def answer_not_owner(self, item: WorkItem, err: NotOwnerError) -> None:
        """Answer a control item of another domain's run "unknown, not mine" (its last
        delivery: no launcher of the owner took it). Never "not running": this launcher
        cannot see the worker."""
        answer: BaseModel
        if item.kind == WorkKind.TERMINATE_RUN:
            answer = RunTerminated(run_id=err.run_id, signalled=None, owner=err.owner)
        else:
            answer = RunHealth(run_id=err.run_id, alive=None, owner=err.owner)
        log.info(
            "%s of run %s: not this launcher's (owned by %s)", item.kind, err.run_id, err.owner
        )
        await self._publisher.publish_result(_succeeded(item, answer))

    async def _find_owned_run(self, run_id: str, owner: str | None) -> RunWorkerHandle | None:
        """The run's worker, if this launcher's domain owns the run.

        The owner is the item's (the control plane read it from the launch result), else
        the run claim's: a terminate can come before the launch result was stored.

        Raises:
            NotOwnerError: another domain owns the run.
        """
        if owner is not None and owner != self.domain:
            raise NotOwnerError(run_id, owner)
        handle = self._runs.get(run_id)
        if handle is None:
            # Launched by another launcher process (or before a restart): its claim holds
            # the pid (or the substrate's worker id).
            claim = await self._claims.get(run_id)
            if claim is not None:
                if claim.domain is not None and claim.domain != self.domain:
                    raise NotOwnerError(run_id, claim.domain)
                record = WorkerRecord(run_id, claim.pid, claim.pid_start, claim.worker_id)
                handle = self._substrate.recorded_run(record)
        return handle

    def detach_runs(self) -> None:
        """Stop monitoring run workers; they keep running on their own."""
        for task in list(self._monitors):
            task.cancel()

"""Lifecycle of the control plane processes until told to stop.

Roles: ``serve`` (:class:`ControlPlaneService`) bootstraps the DB and serves the API, by
default with every daemon beside it (one process on SQLite, `tether dev`); ``serve
--no-daemons`` only the API; ``daemons`` (:class:`DaemonsService`) every daemon and no API.
On PostgreSQL each daemon runs in one process at a time (its leadership lock, see
:class:`~tether.controlplane.db.locks.Leadership`); the others stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from tether.controlplane.alerts import AlertDaemon, DeliveryOptions
from tether.controlplane.app import create_app
from tether.controlplane.core import ControlPlane, open_control_plane, prepare_database
from tether.controlplane.daemons import (
    BackfillDaemon,
    PeriodicDaemon,
    RunCoordinator,
    RunRetrier,
    Scheduler,
    SensorDaemon,
)
from tether.controlplane.daemons.monitor import RunMonitor
from tether.controlplane.db.engine import Database
from tether.controlplane.db.locks import Leadership
from tether.controlplane.metrics import MetricsEndpoint
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs.policies import PolicyDefaults, RetryStrategy
from tether.controlplane.settings import ControlPlaneSettings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server, telling us once it listens and before it drains on a signal."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_listening: Callable[[str, int], None],
        on_exit: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_exit = on_exit

    async def startup(self, sockets: Any = None) -> None:
        """Bind as uvicorn does, then report the address actually bound (port 0 works)."""
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self._on_listening(host, port)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """On SIGTERM/SIGINT, also release long-polls, or they would delay the drain."""
        super().handle_exit(sig, frame)
        self._on_exit()


class ControlPlaneService:
    """The control plane as a service: ``run()`` serves until ``shutdown()``.

    Args:
        settings: the control plane's settings.
        announce: called with the bound ``(host, port)`` once the server listens.

    Attributes:
        address: the bound ``(host, port)`` once listening.
        listening: set once the server listens.
        control_plane: the open control plane while running.
        metrics: the metrics port while running (when ``metrics_port`` is set).
    """

    def __init__(
        self,
        settings: ControlPlaneSettings,
        *,
        announce: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._announce = announce or _print_listening
        self._server: _Server | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release_claims: Callable[[], None] = lambda: None
        self._monitor: RunMonitor | None = None
        self._daemons: list[PeriodicDaemon] = []
        self.address: tuple[str, int] | None = None
        self.control_plane: ControlPlane | None = None
        self.metrics: MetricsEndpoint | None = None
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Migrate and bootstrap the DB, then serve HTTP until shut down."""
        self._loop = asyncio.get_running_loop()
        async with (
            open_control_plane(self.settings) as cp,
            contextlib.AsyncExitStack() as stack,
        ):
            self.control_plane = cp
            self.metrics = await _metrics_endpoint(
                stack, self.settings, cp.db, self.listening.is_set, lambda: cp.queue.waiting
            )
            self._release_claims = cp.queue.close
            config = uvicorn.Config(
                create_app(cp),
                host=self.settings.host,
                port=self.settings.port,
                lifespan="off",
                log_config=None,
                access_log=False,
                # uvicorn would believe X-Forwarded-* from 127.0.0.1; the app decides
                # instead, from `trusted_proxies` (see tether.controlplane.http.security).
                proxy_headers=False,
                timeout_graceful_shutdown=int(self.settings.graceful_shutdown_timeout),
            )
            self._server = _Server(config, self._listening, self.shutdown)
            self._monitor = build_monitor(cp.db, cp.queue, self.settings)
            if self._stopping:
                return
            leadership = Leadership(cp.db.url, retry_s=self.settings.leader_retry_s)
            monitor = None
            if self.settings.run_monitor:
                self._monitor.leadership = leadership
                monitor = asyncio.create_task(self._monitor.run(), name="run-monitor")
            if self.settings.daemons:
                self._daemons = build_daemons(cp.db, cp.queue, self.settings)
            for daemon in self._daemons:
                daemon.leadership = leadership
            daemons = [asyncio.create_task(d.run(), name=d.name) for d in self._daemons]
            try:
                # uvicorn logs and exits the process itself if it cannot bind.
                await self._server.serve()
            finally:
                self._monitor.shutdown()
                for daemon in self._daemons:
                    daemon.shutdown()
                if monitor is not None:
                    await monitor
                if daemons:
                    await asyncio.gather(*daemons)
                await leadership.close()

    def _listening(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.listening.set()
        self._announce(host, port)

    def shutdown(self) -> None:
        """Stop accepting requests, release long-polls, let requests finish; idempotent."""
        self._stopping = True
        if self._loop is not None:
            # May run from a signal handler: touch asyncio objects only from the loop.
            self._loop.call_soon_threadsafe(self._release_claims)
        if self._server is not None:
            self._server.should_exit = True
        if self._monitor is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._monitor.shutdown)
        for daemon in self._daemons:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(daemon.shutdown)


def policy_defaults(settings: ControlPlaneSettings) -> PolicyDefaults:
    """The deployment's run retry and runtime defaults, from ``settings``."""
    return PolicyDefaults(
        max_retries=settings.run_max_retries,
        retry_strategy=RetryStrategy(settings.run_retry_strategy),
        retry_on_asset_or_op_failure=settings.run_retry_on_asset_or_op_failure,
        max_runtime_s=settings.run_max_runtime_s,
    )


class DaemonsService:
    """The daemons of a control plane without its API: ``run()`` until ``shutdown()``.

    Every daemon competes for its leadership lock (PostgreSQL): the process holding it runs
    the daemon, the others stand by and take over when it dies. No bootstrap and no work
    signing here: the API replicas do those; work the daemons enqueue reaches their waiting
    claims through NOTIFY.

    Args:
        settings: the control plane's settings.
        only_monitor: run the run monitor alone (``tether controlplane run-monitor``).
        announce: called once every daemon runs (default: a line on stdout).

    Attributes:
        daemons: the daemons, once running.
        leadership: their locks, once running.
        running: set once every daemon runs.
        metrics: the metrics port while running (when ``metrics_port`` is set).
    """

    def __init__(
        self,
        settings: ControlPlaneSettings,
        *,
        only_monitor: bool = False,
        announce: Callable[[list[PeriodicDaemon]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.only_monitor = only_monitor
        self._announce = announce or _print_daemons
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.daemons: list[PeriodicDaemon] = []
        self.leadership: Leadership | None = None
        self.metrics: MetricsEndpoint | None = None
        self.running = asyncio.Event()

    async def run(self) -> None:
        """Check the DB is migrated (or migrate it), then run the daemons until shut down."""
        self._loop = asyncio.get_running_loop()
        await prepare_database(self.settings)
        db = Database(self.settings.database_url)
        queue = WorkQueue(db, recheck_s=self.settings.claim_recheck_s)
        queue.hold_launches = self.settings.run_queue_enabled
        leadership = Leadership(db.url, retry_s=self.settings.leader_retry_s)
        self.leadership = leadership
        try:
            async with contextlib.AsyncExitStack() as stack:
                self.metrics = await _metrics_endpoint(
                    stack, self.settings, db, self.running.is_set
                )
                await self._run_daemons(db, queue, leadership)
        finally:
            await leadership.close()
            await queue.aclose()
            await db.dispose()

    async def _run_daemons(self, db: Database, queue: WorkQueue, leadership: Leadership) -> None:
        # Runs the API replicas queue (or end) wake the run coordinator here at once.
        queue.start()
        daemons = [] if self.only_monitor else build_daemons(db, queue, self.settings)
        daemons.append(build_monitor(db, queue, self.settings))
        for daemon in daemons:
            daemon.leadership = leadership
        self.daemons = daemons
        if self._stopping:
            return
        tasks = [asyncio.create_task(d.run(), name=d.name) for d in daemons]
        self.running.set()
        self._announce(daemons)
        await asyncio.gather(*tasks)

    def shutdown(self) -> None:
        """Stop every daemon after its check in progress (idempotent; signal-safe)."""
        self._stopping = True
        if self._loop is None:
            return
        for daemon in self.daemons:
            self._loop.call_soon_threadsafe(daemon.shutdown)


async def _metrics_endpoint(
    stack: contextlib.AsyncExitStack,
    settings: ControlPlaneSettings,
    db: Database,
    ready: Callable[[], bool],
    claims_waiting: Callable[[], int] | None = None,
) -> MetricsEndpoint | None:
    """The process's metrics port, entered on ``stack``; None when ``metrics_port`` is
    unset."""
    if settings.metrics_port is None:
        return None
    endpoint = MetricsEndpoint(
        settings.metrics_host,
        settings.metrics_port,
        db,
        interval_s=settings.metrics_interval_s,
        ready=ready,
        claims_waiting=claims_waiting,
    )
    return await stack.enter_async_context(endpoint)


def _print_daemons(daemons: list[PeriodicDaemon]) -> None:
    names = ", ".join(d.name for d in daemons)
    if len(daemons) == 1 and isinstance(daemons[0], RunMonitor):
        print("tether run monitor running", flush=True)
    else:
        print(f"tether control plane daemons running: {names}", flush=True)


def build_monitor(db: Database, queue: WorkQueue, settings: ControlPlaneSettings) -> RunMonitor:
    """The run monitor of a control plane, from ``settings``."""
    return RunMonitor(
        db,
        start_timeout_s=settings.run_start_timeout_s,
        worker_exit_grace_s=settings.worker_exit_grace_s,
        worker_exit_backlog_max_s=settings.worker_exit_backlog_max_s,
        interval_s=settings.run_monitor_interval_s,
        queue=queue,
        health_interval_s=settings.run_health_interval_s,
        max_runtime_s=settings.run_max_runtime_s,
        launch_answer_timeout_s=settings.launch_answer_timeout_s,
    )


def build_daemons(
    db: Database, queue: WorkQueue, settings: ControlPlaneSettings
) -> list[PeriodicDaemon]:
    """The run coordinator, scheduler, sensor daemon, backfill daemon, run retrier and alert
    daemon of a control plane.

    The coordinator runs even when no limit is set here: any deployment may set its own
    (``updateDeploymentSettings``), and a check with nothing waiting is one indexed query.
    """
    return [
        RunCoordinator(
            db,
            queue,
            max_concurrent_runs=settings.max_concurrent_runs,
            tag_limits=settings.run_tag_concurrency_limits,
            interval_s=settings.daemon_interval_s,
        ),
        Scheduler(
            db,
            queue,
            interval_s=settings.daemon_interval_s,
            catchup=settings.schedule_catchup,
            max_catchup_ticks=settings.schedule_max_catchup_ticks,
            catchup_grace_s=settings.schedule_catchup_grace_s,
            tick_timeout_s=settings.tick_timeout_s,
        ),
        SensorDaemon(
            db,
            queue,
            interval_s=settings.daemon_interval_s,
            tick_timeout_s=settings.tick_timeout_s,
        ),
        BackfillDaemon(
            db,
            queue,
            interval_s=settings.daemon_interval_s,
            max_in_flight=settings.backfill_max_in_flight,
            query_timeout_s=settings.tick_timeout_s,
        ),
        RunRetrier(db, queue, policy_defaults(settings), interval_s=settings.daemon_interval_s),
        AlertDaemon(
            db, DeliveryOptions.from_settings(settings), interval_s=settings.daemon_interval_s
        ),
    ]


def _print_listening(host: str, port: int) -> None:
    print(
        f"tether control plane listening on http://{host}:{port} "
        f"(GraphQL at /graphql, health at /healthz)",
        flush=True,
    )
    log.debug("listening on %s:%d", host, port)

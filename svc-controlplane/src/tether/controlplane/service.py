"""Lifecycle of the control plane process: migrate, bootstrap, serve HTTP and run the run
monitor until told to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from tether.controlplane.app import create_app
from tether.controlplane.core import ControlPlane, open_control_plane
from tether.controlplane.daemons import (
    BackfillDaemon,
    PeriodicDaemon,
    RunCoordinator,
    RunRetrier,
    Scheduler,
    SensorDaemon,
)
from tether.controlplane.daemons.monitor import RunMonitor
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
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Migrate and bootstrap the DB, then serve HTTP until shut down."""
        self._loop = asyncio.get_running_loop()
        async with open_control_plane(self.settings) as cp:
            self.control_plane = cp
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
            self._monitor = RunMonitor(
                cp.db,
                start_timeout_s=self.settings.run_start_timeout_s,
                worker_exit_grace_s=self.settings.worker_exit_grace_s,
                worker_exit_backlog_max_s=self.settings.worker_exit_backlog_max_s,
                interval_s=self.settings.run_monitor_interval_s,
                queue=cp.queue,
                health_interval_s=self.settings.run_health_interval_s,
                max_runtime_s=self.settings.run_max_runtime_s,
            )
            if self._stopping:
                return
            monitor = None
            if self.settings.run_monitor:
                monitor = asyncio.create_task(self._monitor.run(), name="run-monitor")
            if self.settings.daemons:
                self._daemons = build_daemons(cp, self.settings)
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


def build_daemons(cp: ControlPlane, settings: ControlPlaneSettings) -> list[PeriodicDaemon]:
    """The scheduler, sensor daemon, backfill daemon, run retrier (and run coordinator) of a
    control plane."""
    coordinator: list[PeriodicDaemon] = []
    if settings.run_queue_enabled:
        coordinator.append(
            RunCoordinator(
                cp.db,
                cp.queue,
                max_concurrent_runs=settings.max_concurrent_runs,
                tag_limits=settings.run_tag_concurrency_limits,
                interval_s=settings.daemon_interval_s,
            )
        )
    return coordinator + [
        Scheduler(
            cp.db,
            cp.queue,
            interval_s=settings.daemon_interval_s,
            catchup=settings.schedule_catchup,
            max_catchup_ticks=settings.schedule_max_catchup_ticks,
            catchup_grace_s=settings.schedule_catchup_grace_s,
            tick_timeout_s=settings.tick_timeout_s,
        ),
        SensorDaemon(
            cp.db,
            cp.queue,
            interval_s=settings.daemon_interval_s,
            tick_timeout_s=settings.tick_timeout_s,
        ),
        BackfillDaemon(
            cp.db,
            cp.queue,
            interval_s=settings.daemon_interval_s,
            max_in_flight=settings.backfill_max_in_flight,
            query_timeout_s=settings.tick_timeout_s,
        ),
        RunRetrier(
            cp.db, cp.queue, policy_defaults(settings), interval_s=settings.daemon_interval_s
        ),
    ]


def _print_listening(host: str, port: int) -> None:
    print(
        f"tether control plane listening on http://{host}:{port} "
        f"(GraphQL at /graphql, health at /healthz)",
        flush=True,
    )
    log.debug("listening on %s:%d", host, port)

"""Prometheus metrics of a control plane process, served as ``GET /metrics`` on its metrics
port (``TETHER_CONTROLPLANE_METRICS_PORT``, loopback by default; off when unset).

What an operator (or an HPA on the API replicas) acts on: requests and their latency by
route, agents' claims long-polling this replica, which daemons this process leads and how
long their checks take, and, read from the database every ``metrics_interval_s``, the runs
not yet ended and the work items waiting for an agent. The database readings are the same
in every replica that serves metrics: aggregate them with ``max``, not ``sum``.

Every instrument lives in prometheus-client's default registry (one control plane per
process, as deployed; tests that open several share them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tether.controlplane.db.engine import Database
from tether.controlplane.store import runs, workitems
from tether.shared.runtime.health import HealthServer
from tether.shared.runtime.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

#: A gauge's label values, in its label order.
Labels = TypeVar("Labels", bound=tuple[str, ...])

__all__ = [
    "CLAIMS_WAITING",
    "DAEMON_CHECKS",
    "DAEMON_CHECK_FAILURES",
    "DAEMON_CHECK_SECONDS",
    "DAEMON_LEADER",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "LIVE_RUNS",
    "WAITING_WORK",
    "DatabaseReadings",
    "MetricsEndpoint",
    "RequestMetrics",
    "timed_check",
]

HTTP_REQUESTS = Counter(
    "tether_controlplane_http_requests",
    "HTTP requests answered, by route (its path template), method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "tether_controlplane_http_request_seconds",
    "Time to answer an HTTP request (a long-polling claim counts its wait), by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
CLAIMS_WAITING = Gauge(
    "tether_controlplane_claims_waiting",
    "Agents' claims waiting for work on this replica (long-polls in progress).",
)
DAEMON_LEADER = Gauge(
    "tether_controlplane_daemon_leader",
    "1 while this process runs the daemon (it leads it, or it needs no lock), 0 on standby.",
    ["daemon"],
)
DAEMON_CHECKS = Counter(
    "tether_controlplane_daemon_checks", "Checks (passes) a daemon ran here.", ["daemon"]
)
DAEMON_CHECK_FAILURES = Counter(
    "tether_controlplane_daemon_check_failures",
    "Checks of a daemon that raised (logged, retried at its next interval).",
    ["daemon"],
)
DAEMON_CHECK_SECONDS = Histogram(
    "tether_controlplane_daemon_check_seconds",
    "Duration of one check (pass) of a daemon.",
    ["daemon"],
    buckets=LATENCY_BUCKETS,
)
LIVE_RUNS = Gauge(
    "tether_controlplane_runs",
    "Runs not yet ended, by deployment and status (QUEUED: waiting for the run queue).",
    ["deployment", "status"],
)
WAITING_WORK = Gauge(
    "tether_controlplane_work_items",
    "Work items for agents not yet dispatched, by deployment, kind and status (PENDING: "
    "no agent claimed it; CLAIMED: leased, not yet acked).",
    ["deployment", "kind", "status"],
)

#: The route label of a request no route matched (bounded cardinality: never the raw path).
UNMATCHED = "unmatched"


async def timed_check(daemon: str, check: Callable[[], Awaitable[object]]) -> object:
    """Run one daemon check, counting it and timing it; a failure is counted and re-raised."""
    DAEMON_CHECKS.labels(daemon).inc()
    started = time.perf_counter()
    try:
        return await check()
    except Exception:
        DAEMON_CHECK_FAILURES.labels(daemon).inc()
        raise
    finally:
        DAEMON_CHECK_SECONDS.labels(daemon).observe(time.perf_counter() - started)


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by its route's path template.

    Args:
        app: the application (a Starlette app, whose routes name the templates).
        routes: the routes to match a path against (those of ``app``).
    """

    def __init__(self, app: ASGIApp, routes: list[Any]) -> None:
        self.app = app
        self.routes = routes

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", UNMATCHED))
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            HTTP_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)


class DatabaseReadings:
    """Reads the live runs and the waiting work from the database every ``interval_s``
    into :data:`LIVE_RUNS` and :data:`WAITING_WORK` (and :data:`CLAIMS_WAITING` from
    ``claims_waiting``), until closed.

    Args:
        db: the control plane's database.
        interval_s: seconds between readings.
        claims_waiting: how many claims wait on this replica now (None: not an API).
    """

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float,
        claims_waiting: Callable[[], int] | None = None,
    ) -> None:
        self._db = db
        self._interval_s = interval_s
        self._claims_waiting = claims_waiting
        self._task: asyncio.Task[None] | None = None
        #: The label sets each gauge was given so far (a series that has gone is set to 0).
        self._seen: dict[Gauge, set[tuple[str, ...]]] = {LIVE_RUNS: set(), WAITING_WORK: set()}

    def start(self) -> None:
        """Start reading in the background (call in the event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="metrics-readings"
            )

    async def close(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.read()
            except Exception as err:  # noqa: BLE001 - a DB outage must not end the readings
                log.warning("metrics: could not read the database: %s", err)
            await asyncio.sleep(self._interval_s)

    async def read(self) -> None:
        """One reading: every gauge set; series that have gone (no more such runs) at 0."""
        if self._claims_waiting is not None:
            CLAIMS_WAITING.set(self._claims_waiting())
        async with self._db.reading() as session:
            live = await runs.count_live_by_status(session)
            waiting = await workitems.count_undispatched(session)
        self._set(LIVE_RUNS, live)
        self._set(WAITING_WORK, waiting)

    def _set(self, gauge: Gauge, counts: Mapping[Labels, int]) -> None:
        seen = self._seen[gauge]
        for labels in seen - counts.keys():
            gauge.labels(*labels).set(0)
        for labels, count in counts.items():
            gauge.labels(*labels).set(count)
        seen.update(counts)


class MetricsEndpoint:
    """The metrics port of a control plane process: ``/metrics`` (with ``/healthz`` and
    ``/readyz``) on ``host:port``, and the database readings behind its gauges.

    Args:
        host: interface to bind (loopback unless a scraper must reach it from elsewhere).
        port: TCP port; 0 picks a free one (see :attr:`port` once started).
        db: the control plane's database (read every ``interval_s``).
        interval_s: seconds between database readings.
        ready: whether the process does its job now (``/readyz``).
        claims_waiting: how many claims wait on this replica (None: no API here).
    """

    def __init__(
        self,
        host: str,
        port: int,
        db: Database,
        *,
        interval_s: float,
        ready: Callable[[], bool],
        claims_waiting: Callable[[], int] | None = None,
    ) -> None:
        self._server = HealthServer(host, port, ready)
        self._readings = DatabaseReadings(db, interval_s=interval_s, claims_waiting=claims_waiting)

    @property
    def port(self) -> int:
        """The bound port."""
        return self._server.port

    async def __aenter__(self) -> MetricsEndpoint:
        await self._server.start()
        self._readings.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._readings.close()
        await self._server.close()

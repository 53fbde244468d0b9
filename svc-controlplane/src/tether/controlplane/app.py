"""The ASGI application: GraphQL at ``/graphql`` (GraphiQL on GET), ``/healthz``, the web UI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from cross_web import HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from tether.controlplane.api import ApiContext, build_schema
from tether.controlplane.api.limits import capped_response
from tether.controlplane.bootstrap import bootstrap
from tether.controlplane.db.engine import Database, migrate
from tether.controlplane.http.bodylimit import BodyLimit
from tether.controlplane.http.jsonbody import JsonBodyError, decode_json_body
from tether.controlplane.http.security import (
    HostAndOriginGuard,
    SecurityHeaders,
    TrustedProxyScheme,
)
from tether.controlplane.security.workkeys import load_or_create_signer
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.ui import ui_routes
from tether.controlplane.ui.sessions import UiSessions
from tether.controlplane.workqueue import WorkQueue
from tether.shared.wire.signing import WorkSigner

log = logging.getLogger(__name__)


@dataclass
class ControlPlane:
    """What the API serves from: settings, the metadata DB, the work queue, and the key
    that signs the work items handed out."""

    settings: ControlPlaneSettings
    db: Database
    queue: WorkQueue
    signer: WorkSigner


@asynccontextmanager
async def open_control_plane(settings: ControlPlaneSettings) -> AsyncIterator[ControlPlane]:
    """Migrate the DB, bootstrap it, and yield a ready control plane; close it afterwards."""
    # Alembic runs on a sync driver; keep the event loop free while it does.
    await asyncio.to_thread(migrate, settings.database_url)
    signer, created = await asyncio.to_thread(load_or_create_signer, settings.work_signing_key_path)
    if created:
        log.info("created the work signing key %s", settings.work_signing_key_path)
    db = Database(settings.database_url)
    queue = WorkQueue(db, recheck_s=settings.claim_recheck_s)
    # With concurrency limits, new runs wait QUEUED for the run coordinator.
    queue.hold_launches = settings.run_queue_enabled
    queue.start()
    try:
        await bootstrap(db, queue, settings)
        yield ControlPlane(settings=settings, db=db, queue=queue, signer=signer)
    finally:
        await queue.aclose()
        await db.dispose()


class _GraphQLApp(GraphQL):
    """Strawberry's ASGI app with the control plane in every request's context."""

    def __init__(self, cp: ControlPlane) -> None:
        super().__init__(build_schema(), graphql_ide="graphiql" if cp.settings.graphiql else None)
        self._cp = cp

    def encode_json(self, data: object) -> str | bytes:
        """The response body, replaced by an error if over graphql_max_response_bytes."""
        return capped_response(
            super().encode_json(data), self._cp.settings.graphql_max_response_bytes
        )

    def decode_json(self, data: str | bytes) -> object:
        """Decode a request's JSON strictly: invalid UTF-8, invalid JSON and nesting deeper
        than ``max_json_depth`` are a 400 with a clear message, never a 500."""
        try:
            value = decode_json_body(data, max_depth=self._cp.settings.max_json_depth)
        except JsonBodyError as err:
            raise HTTPException(400, str(err)) from err
        # A body, and the variables of a GET, are objects (a list is a batch, which
        # strawberry refuses itself); a bare scalar would reach `.get` and fail as a 500.
        if not isinstance(value, dict | list):
            raise HTTPException(400, "expected a JSON object (query, variables, operationName)")
        return value

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Any:
        """Build the per-request :class:`ApiContext`."""
        assert isinstance(request, Request), "subscriptions are not served"
        return ApiContext(request=request, response=response, cp=self._cp)


def create_app(cp: ControlPlane) -> Starlette:
    """Build the ASGI app serving ``cp`` (which the caller opened and will close)."""

    async def healthz(_request: Request) -> Response:
        try:
            async with cp.db.reading() as session:
                await session.execute(text("SELECT 1"))
        except Exception as err:  # noqa: BLE001 - any DB failure means unhealthy
            log.warning("health check failed: %s", err)
            return JSONResponse({"status": "unhealthy", "error": "database unavailable"}, 503)
        return JSONResponse({"status": "ok"})

    graphql_app = _GraphQLApp(cp)
    settings = cp.settings
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            # The web UI last: its routes must not shadow the API's.
            *ui_routes(cp),
        ],
        # Outermost first. All of them sit inside Starlette's error middleware and outside
        # its exception handling, so every answer (a 400, a 413, an error page) passes the
        # header middleware, and the body limit sees the app's exceptions before anyone.
        middleware=[
            Middleware(TrustedProxyScheme, trusted=settings.trusted_proxies),
            Middleware(SecurityHeaders),
            Middleware(HostAndOriginGuard, allowed_hosts=[*settings.allowed_hosts, settings.host]),
            Middleware(BodyLimit, max_bytes=settings.max_request_bytes),
            # UI paths only: the session behind the cookie, and the CSRF check.
            Middleware(UiSessions, cp=cp),
        ],
    )

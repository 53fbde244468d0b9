"""The ASGI application: GraphQL at ``/graphql`` (GraphiQL on GET), ``/healthz``, the web UI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from tether.controlplane.bodylimit import BodyLimit
from tether.controlplane.bootstrap import bootstrap
from tether.controlplane.db.engine import Database, migrate
from tether.controlplane.graphql import ApiContext, build_schema
from tether.controlplane.graphql.limits import capped_response
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.ui import ui_routes
from tether.controlplane.workkeys import load_or_create_signer
from tether.controlplane.workqueue import WorkQueue
from tether.shared.worksigning import WorkSigner

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
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route(
                "/graphql",
                BodyLimit(graphql_app, cp.settings.max_request_bytes),
                methods=["GET", "POST"],
            ),
            # The web UI last: its routes must not shadow the API's.
            *ui_routes(cp),
        ]
    )

"""The ASGI application: GraphQL at ``/graphql`` (GraphiQL on GET), ``/healthz``, the web UI.

Only assembly: the routes of ``api/`` and ``ui/`` behind the ``http/`` middleware, serving
the :class:`~tether.controlplane.core.ControlPlane` the caller opened.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tether.controlplane.api.endpoint import GraphQLApp
from tether.controlplane.core import ControlPlane
from tether.controlplane.http.bodylimit import BodyLimit
from tether.controlplane.http.security import (
    HostAndOriginGuard,
    SecurityHeaders,
    TrustedProxyScheme,
)
from tether.controlplane.metrics import RequestMetrics
from tether.controlplane.store import health
from tether.controlplane.ui import ui_routes
from tether.controlplane.ui.sessions import UiSessions

log = logging.getLogger(__name__)


def create_app(cp: ControlPlane) -> Starlette:
    """Build the ASGI app serving ``cp`` (which the caller opened and will close)."""

    async def healthz(_request: Request) -> Response:
        try:
            async with cp.db.reading() as session:
                await health.ping(session)
        except Exception as err:  # noqa: BLE001 - any DB failure means unhealthy
            log.warning("health check failed: %s", err)
            return JSONResponse({"status": "unhealthy", "error": "database unavailable"}, 503)
        return JSONResponse({"status": "ok"})

    graphql_app = GraphQLApp(cp)
    settings = cp.settings
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        # The web UI last: its routes must not shadow the API's.
        *ui_routes(cp),
    ]
    return Starlette(
        routes=routes,
        # Outermost first. All of them sit inside Starlette's error middleware and outside
        # its exception handling, so every answer (a 400, a 413, an error page) passes the
        # header middleware, and the body limit sees the app's exceptions before anyone.
        middleware=[
            # Counts every answer, the guards' refusals too (by route template, never path).
            Middleware(RequestMetrics, routes=routes),
            Middleware(TrustedProxyScheme, trusted=settings.trusted_proxies),
            Middleware(SecurityHeaders),
            Middleware(HostAndOriginGuard, allowed_hosts=[*settings.allowed_hosts, settings.host]),
            Middleware(BodyLimit, max_bytes=settings.max_request_bytes),
            # UI paths only: the session behind the cookie, and the CSRF check.
            Middleware(UiSessions, cp=cp),
        ],
    )

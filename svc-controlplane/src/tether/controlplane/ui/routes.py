"""The UI's routes: pages, their live fragments, actions, and the static assets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from tether.controlplane.ui.alerts import AlertPages
from tether.controlplane.ui.assets import AssetPages
from tether.controlplane.ui.backfills import BackfillPages
from tether.controlplane.ui.instigators import InstigatorPages
from tether.controlplane.ui.jobs import JobPages
from tether.controlplane.ui.overview import OverviewPages
from tether.controlplane.ui.rendering import STATIC_DIR, render_error
from tether.controlplane.ui.runs import RunPages
from tether.controlplane.ui.schema_client import PageError, SchemaClient
from tether.controlplane.ui.signin import SignInPages

if TYPE_CHECKING:
    from tether.controlplane.core import ControlPlane


def ui_routes(cp: ControlPlane) -> list[BaseRoute]:
    """Routes of the web UI served from ``cp`` (mount them after the API's routes).

    Every asset is served from the package (htmx is vendored under ``static/``), so the UI
    works without any internet resource.
    """
    client = SchemaClient(cp)
    return [
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        *OverviewPages(client).routes(),
        *RunPages(client).routes(),
        *JobPages(client).routes(),
        *InstigatorPages(client).routes(),
        *BackfillPages(client).routes(),
        *AssetPages(client).routes(),
        *AlertPages(client).routes(),
        *SignInPages(cp).routes(),
        # Last: any other path gets the UI's own "not found" page rather than a bare text.
        Route("/{path:path}", not_found, methods=["GET"]),
    ]


async def not_found(request: Request) -> Response:
    """The error page for a path the UI does not have."""
    return render_error(request, PageError("There is no such page.", 404))

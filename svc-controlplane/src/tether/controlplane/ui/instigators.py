"""Schedules and sensors: their list, on/off toggles and tick history."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.ui.rendering import form_fields, render, render_error
from tether.controlplane.ui.schema_client import PageError, SchemaClient

TICK_FIELDS = (
    "ticks(limit: $ticks) { id tickTime status runIds runKeys skipReason cursor"
    " error { clsName message traceback } }"
)

SCHEDULE_FIELDS = f"""
  name locationName repositoryName description cronSchedule executionTimezone jobNames
  status defaultStatus nextTickTimestamp {TICK_FIELDS}
"""

SENSOR_FIELDS = f"""
  name locationName repositoryName description jobNames minimumIntervalSeconds
  status defaultStatus cursor nextTickTimestamp {TICK_FIELDS}
"""

INSTIGATORS_QUERY = f"""
query Instigators($loc: String, $ticks: Int!) {{
  schedules(locationName: $loc) {{ {SCHEDULE_FIELDS} }}
  sensors(locationName: $loc) {{ {SENSOR_FIELDS} }}
  viewer {{ tokenName role canLaunch }}
}}"""

#: The last tick of each schedule/sensor, enough to tell which are failing (overview).
LAST_TICKS_QUERY = """
query LastTicks {
  schedules { name locationName repositoryName status
              ticks(limit: 1) { tickTime status error { clsName message } } }
  sensors { name locationName repositoryName status
            ticks(limit: 1) { tickTime status error { clsName message } } }
}"""

#: Mutation of each (kind, action) a toggle form may post.
TOGGLE_MUTATIONS = {
    (kind, action): (
        f"mutation Toggle($loc: String!, $name: String!, $repo: String) {{"
        f" {action}{kind.title()}(locationName: $loc, name: $name, repositoryName: $repo)"
        f" {{ name status }} }}"
    )
    for kind in ("schedule", "sensor")
    for action in ("start", "stop")
}

#: Ticks shown per schedule/sensor on the full page (the location page shows fewer).
PAGE_TICKS = 20
LOCATION_TICKS = 5


def failing_instigators(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Schedules and sensors whose newest tick failed, each with ``kind`` and ``tick``."""
    failing = []
    for kind, key in (("schedule", "schedules"), ("sensor", "sensors")):
        for item in data[key]:
            ticks = item["ticks"]
            if ticks and ticks[0]["status"] == "FAILURE":
                failing.append({**item, "kind": kind, "tick": ticks[0]})
    return failing


class InstigatorPages:
    """Handlers of ``/schedules`` and the start/stop actions of schedules and sensors."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        return [
            Route("/schedules", self.schedules_page, methods=["GET"]),
            Route(
                "/locations/{location}/schedules/{name}/{action}",
                self.toggle_schedule,
                methods=["POST"],
            ),
            Route(
                "/locations/{location}/sensors/{name}/{action}",
                self.toggle_sensor,
                methods=["POST"],
            ),
        ]

    async def instigators(
        self, request: Request, location: str | None, ticks: int
    ) -> dict[str, Any]:
        """Schedules, sensors and viewer of one location (or all), with ``ticks`` ticks each.

        Raises:
            PageError: the API refused or failed.
        """
        return await self._client.execute(request, INSTIGATORS_QUERY, loc=location, ticks=ticks)

    async def failing(self, request: Request) -> list[dict[str, Any]]:
        """Schedules and sensors whose last tick failed (see :func:`failing_instigators`)."""
        return failing_instigators(await self._client.execute(request, LAST_TICKS_QUERY))

    async def schedules_page(self, request: Request) -> Response:
        """Every schedule and sensor: status, next tick, cursor, toggles and tick history."""
        location = request.query_params.get("location") or None
        try:
            data = await self.instigators(request, location, PAGE_TICKS)
        except PageError as err:
            return render_error(request, err)
        return render(
            request,
            "schedules.html",
            nav="schedules",
            schedules=data["schedules"],
            sensors=data["sensors"],
            viewer=data["viewer"],
            location=location,
        )

    async def toggle_schedule(self, request: Request) -> Response:
        """Start or stop a schedule; back to the page the form was on."""
        return await self._toggle(request, "schedule")

    async def toggle_sensor(self, request: Request) -> Response:
        """Start or stop a sensor; back to the page the form was on."""
        return await self._toggle(request, "sensor")

    async def _toggle(self, request: Request, kind: str) -> Response:
        action = request.path_params["action"]
        location = request.path_params["location"]
        mutation = TOGGLE_MUTATIONS.get((kind, action))
        if mutation is None:
            return render_error(request, PageError("There is no such page.", 404))
        try:
            form = await form_fields(request)
            await self._client.execute(
                request,
                mutation,
                loc=location,
                name=request.path_params["name"],
                repo=form.get("repo") or None,
            )
        except PageError as err:
            return render_error(request, err)
        # Only ever go back to one of the UI's own pages (never an open redirect).
        back = form.get("back", "")
        if not back.startswith("/") or back.startswith("//"):
            back = f"/schedules?location={quote(location, safe='')}"
        return RedirectResponse(back, status_code=303)

"""Schedules and sensors: their list, on/off toggles, catch-up policy and tick history
(a page of its own per schedule/sensor, paged and filtered by outcome)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

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
  status defaultStatus nextTickTimestamp catchupPolicy ownCatchupPolicy overlapPolicy {TICK_FIELDS}
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

#: One schedule's or sensor's page of ticks (every one of the location is asked; the
#: handler keeps the one named).
TICKS_PAGE_QUERY = """
query TicksPage($loc: String!, $limit: Int!, $offset: Int!, $status: String) {
  schedules(locationName: $loc) {
    name locationName repositoryName description cronSchedule executionTimezone jobNames
    status defaultStatus nextTickTimestamp catchupPolicy ownCatchupPolicy overlapPolicy
    ticks(limit: $limit, offset: $offset, status: $status) {
      id tickTime status runIds runKeys skipReason cursor error { clsName message traceback } }
  }
  sensors(locationName: $loc) {
    name locationName repositoryName description jobNames minimumIntervalSeconds
    status defaultStatus cursor nextTickTimestamp
    ticks(limit: $limit, offset: $offset, status: $status) {
      id tickTime status runIds runKeys skipReason cursor error { clsName message traceback } }
  }
  viewer { tokenName role canLaunch }
}"""

SET_CATCHUP_MUTATION = """
mutation SetCatchup($loc: String!, $name: String!, $repo: String, $policy: CatchupPolicy) {
  setScheduleCatchup(locationName: $loc, name: $name, repositoryName: $repo, policy: $policy) {
    name catchupPolicy
  }
}"""

#: Catch-up policies a schedule can be given ("" in the form: the control plane's).
CATCHUP_POLICIES = ("LATEST", "ALL", "NONE")
TICK_STATUSES = ("STARTED", "SUCCESS", "SKIPPED", "FAILURE")

#: Ticks per page of a schedule's or sensor's tick history.
TICKS_PAGE_SIZE = 50

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
                "/locations/{location}/schedules/{name}/ticks",
                self.schedule_ticks,
                methods=["GET"],
            ),
            Route("/locations/{location}/sensors/{name}/ticks", self.sensor_ticks, methods=["GET"]),
            Route(
                "/locations/{location}/schedules/{name}/catchup",
                self.set_catchup,
                methods=["POST"],
            ),
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

    async def schedule_ticks(self, request: Request) -> Response:
        """A schedule's tick history, a page at a time, optionally of one outcome."""
        return await self._ticks_page(request, "schedule")

    async def sensor_ticks(self, request: Request) -> Response:
        """A sensor's tick history, a page at a time, optionally of one outcome."""
        return await self._ticks_page(request, "sensor")

    async def _ticks_page(self, request: Request, kind: str) -> Response:
        location = request.path_params["location"]
        name = request.path_params["name"]
        repo = request.query_params.get("repo") or None
        status = request.query_params.get("status") or None
        try:
            offset = max(int(request.query_params.get("offset", 0)), 0)
        except ValueError:
            offset = 0
        try:
            if status is not None and status not in TICK_STATUSES:
                raise PageError(f"unknown tick status {status!r}", 400)
            # One more than a page tells whether there is a next page without counting.
            data = await self._client.execute(
                request,
                TICKS_PAGE_QUERY,
                loc=location,
                limit=TICKS_PAGE_SIZE + 1,
                offset=offset,
                status=status,
            )
            found = [
                item
                for item in data[f"{kind}s"]
                if item["name"] == name and repo in (None, item["repositoryName"])
            ]
            if not found:
                raise PageError(f"There is no {kind} {name!r} in code location {location!r}.", 404)
        except PageError as err:
            return render_error(request, err)
        item = found[0]
        ticks = item["ticks"]
        item = {**item, "ticks": ticks[:TICKS_PAGE_SIZE]}
        query = {"repo": repo, "status": status}
        return render(
            request,
            "ticks.html",
            nav="schedules",
            item=item,
            kind=kind,
            viewer=data["viewer"],
            status=status,
            statuses=TICK_STATUSES,
            offset=offset,
            page_size=TICKS_PAGE_SIZE,
            has_next=len(ticks) > TICKS_PAGE_SIZE,
            filter_query=urlencode({k: v for k, v in query.items() if v}),
        )

    async def set_catchup(self, request: Request) -> Response:
        """Give a schedule its own catch-up policy (or none); back to the page it was on."""
        location = request.path_params["location"]
        try:
            form = await form_fields(request)
            policy = form.get("policy") or None
            if policy is not None and policy not in CATCHUP_POLICIES:
                raise PageError(f"Unknown catch-up policy {policy!r}.", 400)
            await self._client.execute(
                request,
                SET_CATCHUP_MUTATION,
                loc=location,
                name=request.path_params["name"],
                repo=form.get("repo") or None,
                policy=policy,
            )
        except PageError as err:
            return render_error(request, err)
        return RedirectResponse(_back(form, location), status_code=303)

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
        return RedirectResponse(_back(form, location), status_code=303)


def _back(form: dict[str, str], location: str) -> str:
    """Where a form returns to: the page it names, only ever one of the UI's own."""
    back = form.get("back", "")
    # Never an open redirect (//host or a scheme).
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = f"/schedules?location={quote(location, safe='')}"
    return back

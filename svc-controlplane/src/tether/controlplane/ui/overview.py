"""Overview, code locations (list, page, reload) and agents."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.ui.instigators import (
    INSTIGATORS_QUERY,
    LAST_TICKS_QUERY,
    LOCATION_TICKS,
    failing_instigators,
)
from tether.controlplane.ui.rendering import render, render_error
from tether.controlplane.ui.schema_client import PageError, SchemaClient

#: An agent whose last heartbeat is older than this is shown offline (agents beat every ~5 s).
OFFLINE_AFTER_S = 30.0

LOCATIONS_FIELDS = """
  name loadStatus snapshotId config
  loadError { clsName message traceback }
  repositories { name description jobs { name description } }
"""

AGENTS_FIELDS = "agentId lastHeartbeat services codeServers queues errors"

OVERVIEW_QUERY = f"""
query Overview {{
  agents {{ {AGENTS_FIELDS} }}
  codeLocations {{ {LOCATIONS_FIELDS} }}
  runs(limit: 10) {{ id jobName locationName status createdAt startedAt endedAt }}
  viewer {{ tokenName role canLaunch }}
}}"""

VIEWER_FIELDS = "viewer { tokenName role canLaunch }"

LOCATIONS_QUERY = f"query Locations {{ codeLocations {{ {LOCATIONS_FIELDS} }} {VIEWER_FIELDS} }}"

AGENTS_QUERY = f"query Agents {{ agents {{ {AGENTS_FIELDS} }} {VIEWER_FIELDS} }}"

RELOAD_MUTATION = "mutation Reload($name: String!) { reloadLocation(name: $name) { name } }"


def describe_agents(agents: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Agents with an ``online`` flag and their services as sorted ``(name, state)`` rows."""
    described = []
    for agent in agents:
        services = agent["services"] if isinstance(agent["services"], dict) else {}
        described.append(
            {
                **agent,
                "online": now - agent["lastHeartbeat"] < OFFLINE_AFTER_S,
                "service_rows": sorted(services.items()),
                "code_server_rows": agent["codeServers"]
                if isinstance(agent["codeServers"], list)
                else [],
                "queue_rows": sorted((agent["queues"] or {}).items())
                if isinstance(agent["queues"], dict)
                else [],
            }
        )
    return described


def code_servers_by_location(agents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Code servers of online agents, by location name, each with its agent's id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        if not agent["online"]:
            continue
        for server in agent["code_server_rows"]:
            if isinstance(server, dict) and "location_name" in server:
                found.setdefault(server["location_name"], []).append(
                    {**server, "agent_id": agent["agentId"]}
                )
    return found


class OverviewPages:
    """Handlers of ``/``, ``/locations``, ``/locations/{name}`` and ``/agents``."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        return [
            Route("/", self.overview, methods=["GET"]),
            Route("/overview/live", self.overview_live, methods=["GET"]),
            Route("/locations", self.locations, methods=["GET"]),
            Route("/locations/{location}", self.location, methods=["GET"]),
            Route("/locations/{location}/reload", self.reload, methods=["POST"]),
            Route("/agents", self.agents, methods=["GET"]),
        ]

    async def _overview_context(self, request: Request) -> dict[str, Any]:
        data = await self._client.execute(request, OVERVIEW_QUERY)
        agents = describe_agents(data["agents"], time.time())
        last_ticks = await self._client.execute(request, LAST_TICKS_QUERY)
        return {
            "failing": failing_instigators(last_ticks),
            "agents": agents,
            "locations": data["codeLocations"],
            "code_servers": code_servers_by_location(agents),
            "runs": data["runs"],
            "viewer": data["viewer"],
        }

    async def overview(self, request: Request) -> Response:
        """Agents, code locations and recent runs at a glance (refreshed every few seconds)."""
        try:
            context = await self._overview_context(request)
        except PageError as err:
            return render_error(request, err)
        return render(request, "overview.html", nav="overview", **context)

    async def overview_live(self, request: Request) -> Response:
        """The overview's body alone, for polling."""
        try:
            context = await self._overview_context(request)
        except PageError as err:
            return render_error(request, err)
        return render(request, "_overview_live.html", **context)

    async def locations(self, request: Request) -> Response:
        """Every code location with its load status."""
        try:
            data = await self._client.execute(request, LOCATIONS_QUERY)
        except PageError as err:
            return render_error(request, err)
        return render(
            request,
            "locations.html",
            nav="locations",
            locations=data["codeLocations"],
            viewer=data["viewer"],
        )

    async def location(self, request: Request) -> Response:
        """One code location: repositories, jobs, schedules and sensors, load error, reload."""
        name = request.path_params["location"]
        try:
            data = await self._client.execute(request, LOCATIONS_QUERY)
            found = [loc for loc in data["codeLocations"] if loc["name"] == name]
            if not found:
                raise PageError(f"There is no code location {name!r}.", 404)
            instigators = await self._client.execute(
                request, INSTIGATORS_QUERY, loc=name, ticks=LOCATION_TICKS
            )
        except PageError as err:
            return render_error(request, err)
        return render(
            request,
            "location.html",
            nav="locations",
            location=found[0],
            schedules=instigators["schedules"],
            sensors=instigators["sensors"],
            viewer=data["viewer"],
        )

    async def reload(self, request: Request) -> Response:
        """Queue a reload of the location's definitions; back to its page."""
        name = request.path_params["location"]
        try:
            await self._client.execute(request, RELOAD_MUTATION, name=name)
        except PageError as err:
            return render_error(request, err)
        return RedirectResponse(f"/locations/{quote(name, safe='')}", status_code=303)

    async def agents(self, request: Request) -> Response:
        """Every agent: online or not, its services, code servers, queues and errors."""
        try:
            data = await self._client.execute(request, AGENTS_QUERY)
        except PageError as err:
            return render_error(request, err)
        return render(
            request,
            "agents.html",
            nav="agents",
            agents=describe_agents(data["agents"], time.time()),
            viewer=data["viewer"],
        )

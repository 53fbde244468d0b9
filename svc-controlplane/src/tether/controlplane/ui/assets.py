"""Asset pages: the catalog, one asset (definition, lineage, history, metadata plots,
partitions, materialize), and the global asset graph with materializing a selection.

Everything is read through the ``assetNodes`` / ``assetNode`` queries and launched through
``materializeAssets`` (one location per call: a selection spanning locations launches one
run per location). An asset's URL is ``/assets/`` followed by its key path, each component
percent-quoted (``/assets/warehouse/orders``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.ui.dag import layout_dag
from tether.controlplane.ui.jobs import parse_json_object
from tether.controlplane.ui.rendering import asset_key as key_string
from tether.controlplane.ui.rendering import (
    form_fields,
    form_items,
    render,
    render_error,
)
from tether.controlplane.ui.schema_client import PageError, SchemaClient

#: Fields of every node the catalog and the graphs need.
NODE_FIELDS = """
  assetKey { path } description groupName locationName repositoryName isExternal
  dependencyKeys { path } dependedByKeys { path } owners kinds jobNames partitionsKind
  latestMaterialization { runId timestamp partition }
  stale staleReasons
"""

CATALOG_QUERY = f"""
query AssetCatalog {{
  assetNodes {{ {NODE_FIELDS} }}
  viewer {{ tokenName role canLaunch }}
}}"""

ASSET_QUERY = f"""
query AssetPage($key: [String!]!, $limit: Int!) {{
  assetNode(assetKey: $key) {{
    {NODE_FIELDS}
    opName codeVersion metadata partitionKeys
    materializations(limit: $limit) {{
      runId stepKey timestamp partition description metadata codeVersion
    }}
    materializedPartitions
  }}
  assetNodes {{ {NODE_FIELDS} }}
  viewer {{ tokenName role canLaunch }}
}}"""

ASSET_PARTITIONS_QUERY = """
query AssetPartitions($key: [String!]!) {
  assetNode(assetKey: $key) {
    assetKey { path } locationName repositoryName jobNames partitionsKind partitionKeys
    materializedPartitions
  }
  viewer { tokenName role canLaunch }
}"""

JOB_PARTITION_KEYS_QUERY = """
query AssetJobPartitionKeys($loc: String!, $job: String!, $repo: String, $timeout: Float!) {
  partitionKeys(locationName: $loc, jobName: $job, repositoryName: $repo,
                timeoutSeconds: $timeout) { partitionSetName keys }
}"""

MATERIALIZE_MUTATION = """
mutation Materialize($loc: String!, $keys: [[String!]!]!, $partition: String, $cfg: JSON) {
  materializeAssets(locationName: $loc, assetKeys: $keys, partitionKey: $partition,
                    runConfig: $cfg) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on RunConfigValidationInvalid { message errors }
    ... on JobNotFoundError { message }
    ... on LocationNotLoadedError { message }
  }
}"""

#: Materializations the asset page lists (and plots).
HISTORY_LIMIT = 100
#: Partitions the grid draws at most (the newest ones).
GRID_LIMIT = 1000
#: How long the page waits for an agent to list a time-window asset's partitions.
KEYS_TIMEOUT_S = 10.0
#: The implicit asset jobs' name prefix (``__asset_job``, ``__asset_job_<n>``).
ASSET_JOB_PREFIX = "__asset_job"
#: The catalog's status filter values.
STATUSES = ("materialized", "stale", "never", "external")


def asset_status(node: dict[str, Any]) -> str:
    """``external`` (computed elsewhere), ``never`` materialized, ``stale`` or ``materialized``."""
    if node.get("isExternal"):
        return "external"
    if node.get("latestMaterialization") is None:
        return "never"
    return "stale" if node.get("stale") else "materialized"


def key_from_path(raw: str) -> list[str]:
    """The key path of an asset URL's tail.

    Raises:
        PageError: the tail is not a key (empty, or with an empty component).
    """
    parts = raw.split("/")
    if not raw or any(not part for part in parts):
        raise PageError(f"{raw!r} is not an asset key (components joined by '/').", 404)
    return parts


# --- metadata plots -------------------------------------------------------------------


@dataclass(frozen=True)
class ChartPoint:
    """One plotted value: where it is drawn, and what it is."""

    x: float
    y: float
    value: float
    timestamp: float
    run_id: str


@dataclass(frozen=True)
class LineChart:
    """A numeric metadata key over time, laid out for an inline SVG."""

    label: str
    points: tuple[ChartPoint, ...]
    width: float
    height: float
    left: float
    top: float
    bottom: float
    right: float
    low: float
    high: float
    first_time: float
    last_time: float

    @property
    def path(self) -> str:
        """The SVG polyline's points."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    @property
    def latest(self) -> float:
        """The newest value."""
        return self.points[-1].value


CHART_WIDTH = 360.0
CHART_HEIGHT = 150.0
CHART_LEFT = 56.0
CHART_RIGHT = 12.0
CHART_TOP = 12.0
CHART_BOTTOM = 26.0


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def metadata_charts(materializations: list[dict[str, Any]]) -> list[LineChart]:
    """One line chart per metadata key that has a number in any materialization.

    ``materializations`` come newest first (as the API gives them); charts run oldest to
    newest, left to right, on a time axis.
    """
    series: dict[str, list[tuple[float, float, str]]] = {}
    for mat in reversed(materializations):
        metadata = mat.get("metadata")
        if not isinstance(metadata, dict):
            continue
        for name, value in metadata.items():
            number = _numeric(value)
            if number is not None:
                series.setdefault(str(name), []).append((mat["timestamp"], number, mat["runId"]))
    charts = []
    for name in sorted(series):
        values = series[name]
        times = [t for t, _, _ in values]
        numbers = [v for _, v, _ in values]
        t0, t1 = min(times), max(times)
        low, high = min(numbers), max(numbers)
        if high == low:
            # A flat line sits in the middle of a small band around its value.
            pad = abs(high) * 0.1 or 1.0
            low, high = low - pad, high + pad
        inner_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
        inner_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
        points = []
        for t, v, run_id in values:
            x = CHART_LEFT + (inner_w * (t - t0) / (t1 - t0) if t1 > t0 else inner_w / 2)
            y = CHART_TOP + inner_h * (1 - (v - low) / (high - low))
            points.append(ChartPoint(x, y, v, t, run_id))
        charts.append(
            LineChart(
                label=name,
                points=tuple(points),
                width=CHART_WIDTH,
                height=CHART_HEIGHT,
                left=CHART_LEFT,
                top=CHART_TOP,
                bottom=CHART_HEIGHT - CHART_BOTTOM,
                right=CHART_WIDTH - CHART_RIGHT,
                low=low,
                high=high,
                first_time=t0,
                last_time=t1,
            )
        )
    return charts


# --- graphs ---------------------------------------------------------------------------


def _edges(nodes: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (key_string(up["path"]), key)
        for key, node in nodes.items()
        for up in node["dependencyKeys"]
        if key_string(up["path"]) in nodes
    ]


def neighbourhood(
    key: str, every: dict[str, dict[str, Any]]
) -> tuple[list[str], list[tuple[str, str]]]:
    """The asset ``key``, its direct upstream and downstream assets, and the edges among them."""
    node = every[key]
    names = {key}
    names |= {key_string(k["path"]) for k in node["dependencyKeys"]}
    names |= {key_string(k["path"]) for k in node["dependedByKeys"]}
    known = {n: every[n] for n in names if n in every}
    return sorted(names), [(s, t) for s, t in _edges(known) if key in (s, t)] + [
        # An upstream key no location defines is still drawn, as a dangling box.
        (name, key)
        for name in names
        if name not in every
    ]


def partition_cells(keys: list[str], materialized: list[str]) -> list[dict[str, Any]]:
    """The partition grid's cells: each key and whether it was materialized."""
    done = set(materialized)
    return [{"key": k, "done": k in done} for k in keys[-GRID_LIMIT:]]


class AssetPages:
    """Handlers of ``/assets``, ``/assets/{key}``, ``/asset-graph`` and their actions."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        return [
            Route("/assets", self.catalog, methods=["GET"]),
            Route("/assets/{key:path}", self.asset_page, methods=["GET"]),
            Route("/asset-partitions/{key:path}", self.partitions, methods=["GET"]),
            Route("/asset-materialize/{key:path}", self.materialize, methods=["POST"]),
            Route("/asset-graph", self.graph_page, methods=["GET"]),
            Route("/asset-graph/materialize", self.materialize_selection, methods=["POST"]),
        ]

    # --- catalog ----------------------------------------------------------------------

    async def catalog(self, request: Request) -> Response:
        """Every asset, searched by key and filtered by group, location, owner and status."""
        try:
            data = await self._client.execute(request, CATALOG_QUERY)
        except PageError as err:
            return render_error(request, err)
        every = data["assetNodes"]
        for n in every:
            n["uiStatus"] = asset_status(n)
        params = request.query_params
        search = params.get("q", "").strip()
        group = params.get("group", "")
        location = params.get("location", "")
        owner = params.get("owner", "")
        status = params.get("status", "")
        shown = [
            n
            for n in every
            if search.lower() in key_string(n["assetKey"]["path"]).lower()
            and group in ("", n["groupName"])
            and location in ("", n["locationName"])
            and (not owner or owner in n["owners"])
            and status in ("", asset_status(n))
        ]
        return render(
            request,
            "assets.html",
            nav="assets",
            assets=shown,
            total=len(every),
            search=search,
            group=group,
            location=location,
            owner=owner,
            status=status,
            groups=sorted({n["groupName"] for n in every}),
            locations=sorted({n["locationName"] for n in every}),
            owners=sorted({o for n in every for o in n["owners"]}),
            statuses=STATUSES,
            viewer=data["viewer"],
        )

    # --- one asset --------------------------------------------------------------------

    async def _asset_page(
        self,
        request: Request,
        *,
        config_text: str = "{}",
        problems: list[str] | None = None,
        status_code: int = 200,
    ) -> Response:
        try:
            path = key_from_path(request.path_params["key"])
            data = await self._client.execute(request, ASSET_QUERY, key=path, limit=HISTORY_LIMIT)
        except PageError as err:
            return render_error(request, err)
        node = data["assetNode"]
        if node is None:
            return render_error(
                request,
                PageError(f"No loaded code location defines the asset {key_string(path)!r}.", 404),
            )
        every = {key_string(n["assetKey"]["path"]): n for n in data["assetNodes"]}
        key = key_string(path)
        every.setdefault(key, node)
        names, edges = neighbourhood(key, every)
        lineage = layout_dag(names, edges)
        statuses = {
            name: ("current" if name == key else asset_status(every[name]))
            if name in every
            else "unknown"
            for name in names
        }
        static_keys = node["partitionKeys"]
        return render(
            request,
            "asset.html",
            status_code=status_code,
            nav="assets",
            node=node,
            key=key,
            status=asset_status(node),
            known=set(every),
            lineage=lineage,
            lineage_status=statuses,
            lineage_paths={n: every[n]["assetKey"]["path"] for n in names if n in every},
            history=node["materializations"],
            charts=metadata_charts(node["materializations"]),
            cells=partition_cells(static_keys, node["materializedPartitions"]),
            partition_keys=static_keys,
            asset_job=min(
                (j for j in node["jobNames"] if j.startswith(ASSET_JOB_PREFIX)), default=None
            ),
            config_text=config_text,
            problems=problems or [],
            viewer=data["viewer"],
        )

    async def asset_page(self, request: Request) -> Response:
        """One asset: definition, lineage, history, metadata plots, partitions, materialize."""
        return await self._asset_page(request)

    async def partitions(self, request: Request) -> Response:
        """A time-window asset's partition grid and picker, keys asked of an agent (htmx)."""
        try:
            path = key_from_path(request.path_params["key"])
            data = await self._client.execute(request, ASSET_PARTITIONS_QUERY, key=path)
        except PageError as err:
            return render_error(request, err)
        node = data["assetNode"]
        if node is None:
            return render_error(request, PageError("No location defines this asset.", 404))
        context: dict[str, Any] = {
            "node": node,
            "viewer": data["viewer"],
            "picker": bool(request.query_params.get("picker")),
        }
        keys = node["partitionKeys"]
        if not keys:
            jobs = sorted(j for j in node["jobNames"] if j.startswith(ASSET_JOB_PREFIX))
            if not jobs:
                return render(
                    request,
                    "_asset_partitions.html",
                    problem="No asset job materializes this asset, so its partitions are unknown.",
                    **context,
                )
            try:
                answer = await self._client.execute(
                    request,
                    JOB_PARTITION_KEYS_QUERY,
                    loc=node["locationName"],
                    job=jobs[0],
                    repo=node["repositoryName"],
                    timeout=KEYS_TIMEOUT_S,
                )
            except PageError as err:
                return render(
                    request,
                    "_asset_partitions.html",
                    problem=err.message,
                    timed_out=err.code == "AGENT_TIMEOUT",
                    **context,
                )
            keys = answer["partitionKeys"]["keys"]
        return render(
            request,
            "_asset_partitions.html",
            keys=keys,
            cells=partition_cells(keys, node["materializedPartitions"]),
            **context,
        )

    async def materialize(self, request: Request) -> Response:
        """Materialize the asset (one partition, if chosen) with the editor's run config."""
        try:
            form = await form_fields(request)
            path = key_from_path(request.path_params["key"])
            data = await self._client.execute(request, ASSET_PARTITIONS_QUERY, key=path)
        except PageError as err:
            return render_error(request, err)
        node = data["assetNode"]
        if node is None:
            return render_error(
                request, PageError(f"No location defines the asset {key_string(path)!r}.", 404)
            )
        config_text = str(form.get("run_config", ""))
        config, problems = parse_json_object(config_text, "Run config")
        partition = str(form.get("partition", "")) or None
        if node["partitionsKind"] and partition is None:
            problems.append("Choose the partition to materialize: this asset is partitioned.")
        if problems:
            return await self._asset_page(
                request, config_text=config_text, problems=problems, status_code=400
            )
        try:
            result = (
                await self._client.execute(
                    request,
                    MATERIALIZE_MUTATION,
                    loc=node["locationName"],
                    keys=[path],
                    partition=partition,
                    cfg=config or None,
                )
            )["materializeAssets"]
        except PageError as err:
            return await self._asset_page(
                request, config_text=config_text, problems=[err.message], status_code=err.status
            )
        if result["__typename"] == "LaunchRunSuccess":
            return RedirectResponse(f"/runs/{quote(result['run']['id'])}", status_code=303)
        return await self._asset_page(
            request,
            config_text=config_text,
            problems=[result["message"], *result.get("errors", [])],
            status_code=422,
        )

    # --- the global graph -------------------------------------------------------------

    async def _graph_page(
        self,
        request: Request,
        *,
        selected: set[str] | None = None,
        notices: list[str] | None = None,
        problems: list[str] | None = None,
        launched: list[dict[str, str]] | None = None,
        status_code: int = 200,
    ) -> Response:
        try:
            data = await self._client.execute(request, CATALOG_QUERY)
        except PageError as err:
            return render_error(request, err)
        every = {key_string(n["assetKey"]["path"]): n for n in data["assetNodes"]}
        group = request.query_params.get("group", "")
        location = request.query_params.get("location", "")
        shown = {
            k: n
            for k, n in every.items()
            if group in ("", n["groupName"]) and location in ("", n["locationName"])
        }
        graph = layout_dag(sorted(shown), _edges(shown))
        return render(
            request,
            "asset_graph.html",
            status_code=status_code,
            nav="asset-graph",
            graph=graph,
            nodes=shown,
            statuses={k: asset_status(n) for k, n in shown.items()},
            paths={k: n["assetKey"]["path"] for k, n in shown.items()},
            group=group,
            location=location,
            groups=sorted({n["groupName"] for n in every.values()}),
            locations=sorted({n["locationName"] for n in every.values()}),
            cross_location={
                (s, t)
                for s, t in _edges(shown)
                if shown[s]["locationName"] != shown[t]["locationName"]
            },
            selected=selected or set(),
            notices=notices or [],
            problems=problems or [],
            launched=launched or [],
            viewer=data["viewer"],
        )

    async def graph_page(self, request: Request) -> Response:
        """Every asset across locations as one graph, coloured by status."""
        return await self._graph_page(request)

    async def materialize_selection(self, request: Request) -> Response:
        """Materialize the checked assets: one run per location (``materializeAssets`` takes
        one location), each narrowed to that location's checked assets."""
        try:
            items = await form_items(request)
            data = await self._client.execute(request, CATALOG_QUERY)
        except PageError as err:
            return render_error(request, err)
        every = {key_string(n["assetKey"]["path"]): n for n in data["assetNodes"]}
        wanted = sorted({value for name, value in items if name == "asset"})
        if not wanted:
            return await self._graph_page(
                request, problems=["Check the assets to materialize first."], status_code=400
            )
        unknown = [k for k in wanted if k not in every]
        external = [k for k in wanted if k in every and every[k]["isExternal"]]
        if unknown or external:
            problem = (
                f"No loaded location defines {', '.join(unknown)}."
                if unknown
                else f"{', '.join(external)} {'is' if len(external) == 1 else 'are'} "
                "computed outside Tether: nothing here can materialize it."
            )
            return await self._graph_page(
                request, selected=set(wanted), problems=[problem], status_code=400
            )
        by_location: dict[str, list[str]] = {}
        for key in wanted:
            by_location.setdefault(every[key]["locationName"], []).append(key)
        launched: list[dict[str, str]] = []
        problems: list[str] = []
        for location, keys in sorted(by_location.items()):
            try:
                result = (
                    await self._client.execute(
                        request,
                        MATERIALIZE_MUTATION,
                        loc=location,
                        keys=[every[k]["assetKey"]["path"] for k in keys],
                        partition=None,
                        cfg=None,
                    )
                )["materializeAssets"]
            except PageError as err:
                problems.append(f"{location}: {err.message}")
                continue
            if result["__typename"] == "LaunchRunSuccess":
                launched.append(
                    {"location": location, "run_id": result["run"]["id"], "assets": ", ".join(keys)}
                )
            else:
                problems.append(f"{location}: {result['message']}")
        if len(launched) == 1 and not problems:
            return RedirectResponse(f"/runs/{quote(launched[0]['run_id'])}", status_code=303)
        notices = []
        if len(by_location) > 1:
            notices.append(
                f"The selection spans {len(by_location)} code locations, so it runs as one "
                "run per location."
            )
        return await self._graph_page(
            request,
            selected=set(wanted) if problems else set(),
            notices=notices,
            problems=problems,
            launched=launched,
            status_code=200 if launched else 422,
        )

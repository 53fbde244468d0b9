"""Asset pages: the catalog, one asset (definition, lineage, history, metadata plots,
partition statuses, materialize, backfill), and the global asset graph with materializing
a selection.

Everything is read through the ``assetNodes`` / ``assetNode`` queries and launched through
``materializeAssets`` (one location per call: a selection spanning locations launches one
run per location) or, for partitioned assets, ``launchBackfill(assetSelection)`` (one
backfill per location). An asset's URL is ``/assets/`` followed by its key path, each
component percent-quoted (``/assets/warehouse/orders``).
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
    opName codeVersion metadata partitionKeyCount
    materializations(limit: $limit) {{
      runId reportId stepKey timestamp partition description metadata codeVersion
    }}
    materializedPartitions
  }}
  assetNodes {{ {NODE_FIELDS} }}
  viewer {{ tokenName role canLaunch }}
}}"""

ASSET_PARTITIONS_QUERY = """
query AssetPartitions($key: [String!]!) {
  assetNode(assetKey: $key) {
    assetKey { path } locationName repositoryName jobNames partitionsKind partitionKeyCount
    materializedPartitions
  }
  viewer { tokenName role canLaunch }
}"""

JOB_PARTITION_KEYS_QUERY = """
query AssetJobPartitionKeys($loc: String!, $job: String!, $repo: String, $timeout: Float!) {
  partitionKeys(locationName: $loc, jobName: $job, repositoryName: $repo,
                timeoutSeconds: $timeout) { partitionSetName keys }
}"""

PARTITION_STATUSES_QUERY = """
query AssetPartitionStatuses($key: [String!]!, $limit: Int!, $offset: Int!) {
  assetNode(assetKey: $key) {
    partitionStatuses(limit: $limit, offset: $offset) {
      counts { total materialized missing failed inProgress }
      partitions { partitionKey status runId }
    }
  }
}"""

ASSET_BACKFILL_MUTATION = """
mutation AssetBackfill($loc: String!, $assets: [[String!]!]!, $repo: String, $keys: [String!],
                       $from: String, $to: String) {
  launchBackfill(locationName: $loc, assetSelection: $assets, repositoryName: $repo,
                 partitionKeys: $keys, fromKey: $from, toKey: $to) { id }
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
#: Partitions one page of the grid draws at most (page 0: the newest ones).
GRID_LIMIT = 500
#: The API's largest page of partition statuses ("all missing" pages through them).
STATUSES_PAGE = 10_000
#: The grid's cell classes, legend order.
PARTITION_STATES = ("materialized", "in_progress", "failed", "missing")
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
    #: None: a run-less report.
    run_id: str | None


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
    series: dict[str, list[tuple[float, float, str | None]]] = {}
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


def sentence(message: str) -> str:
    """``message`` as one sentence: capitalized, ending with a full stop."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message[-1] in ".!?" else message + "."


@dataclass(frozen=True)
class PartitionGrid:
    """One page of an asset's partition grid: cells in partition order, and counts over all.

    ``page`` 0 holds the newest :data:`GRID_LIMIT` partitions, page 1 the ones before, ...
    Each cell is ``{"key", "status" (one of PARTITION_STATES), "run_id"}``; ``run_id`` is the
    run of its newest materialization, or of its newest (running or failed) attempt.
    """

    cells: list[dict[str, Any]]
    counts: dict[str, int]
    page: int
    pages: int
    start: int

    @property
    def keys(self) -> list[str]:
        """The shown partitions' keys, in order."""
        return [c["key"] for c in self.cells]

    @property
    def live(self) -> bool:
        """Whether some partition is being materialized (the grid then polls)."""
        return self.counts.get("inProgress", 0) > 0


def grid_page_of(request: Request) -> int:
    """The ``page`` query parameter (0: the newest partitions); bad values are 0."""
    try:
        return max(int(request.query_params.get("page", 0)), 0)
    except ValueError:
        return 0


def partition_cells(keys: list[str], materialized: list[str]) -> PartitionGrid:
    """The grid of keys an agent listed: each materialized or missing (the control plane
    has no statuses of keys it cannot list itself); the newest :data:`GRID_LIMIT`."""
    done = set(materialized)
    shown = keys[-GRID_LIMIT:]
    cells = [
        {"key": k, "status": "materialized" if k in done else "missing", "run_id": None}
        for k in shown
    ]
    made = sum(1 for k in keys if k in done)
    counts = {
        "total": len(keys),
        "materialized": made,
        "missing": len(keys) - made,
        "failed": 0,
        "inProgress": 0,
    }
    return PartitionGrid(cells, counts, 0, 1, len(keys) - len(shown))


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
            Route("/asset-backfill/{key:path}", self.backfill, methods=["POST"]),
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

    async def _grid(
        self, request: Request, path: list[str], total: int, page: int
    ) -> PartitionGrid:
        """Page ``page`` of the partitions' statuses (``total``: the asset's key count)."""
        pages = max(math.ceil(total / GRID_LIMIT), 1)
        page = min(page, pages - 1)
        end = total - page * GRID_LIMIT
        start = max(end - GRID_LIMIT, 0)
        data = await self._client.execute(
            request, PARTITION_STATUSES_QUERY, key=path, limit=end - start, offset=start
        )
        statuses = (data["assetNode"] or {}).get("partitionStatuses")
        if statuses is None:
            raise PageError("This asset is not partitioned.", 404)
        cells = [
            {"key": p["partitionKey"], "status": p["status"].lower(), "run_id": p["runId"]}
            for p in statuses["partitions"]
        ]
        return PartitionGrid(cells, statuses["counts"], page, pages, start)

    async def _asset_page(
        self,
        request: Request,
        *,
        config_text: str = "{}",
        problems: list[str] | None = None,
        status_code: int = 200,
        backfill_from: str | None = None,
        backfill_to: str | None = None,
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
        grid: PartitionGrid | None = None
        if node["partitionsKind"] and node["partitionKeyCount"]:
            try:
                grid = await self._grid(
                    request, path, node["partitionKeyCount"], grid_page_of(request)
                )
            except PageError as err:
                return render_error(request, err)
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
            grid=grid,
            partition_keys=grid.keys if grid else [],
            states=PARTITION_STATES,
            asset_job=min(
                (j for j in node["jobNames"] if j.startswith(ASSET_JOB_PREFIX)), default=None
            ),
            config_text=config_text,
            problems=problems or [],
            backfill_from=backfill_from,
            backfill_to=backfill_to,
            viewer=data["viewer"],
        )

    async def asset_page(self, request: Request) -> Response:
        """One asset: definition, lineage, history, metadata plots, partitions, materialize."""
        return await self._asset_page(request)

    async def partitions(self, request: Request) -> Response:
        """The partition grid (htmx: paging, polling while partitions are in progress) and
        picker; keys asked of an agent when the control plane cannot list them."""
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
        if node["partitionKeyCount"]:
            try:
                grid = await self._grid(
                    request, path, node["partitionKeyCount"], grid_page_of(request)
                )
            except PageError as err:
                return render_error(request, err)
            return render(
                request,
                "_asset_partitions.html",
                keys=grid.keys,
                grid=grid,
                states=PARTITION_STATES,
                **context,
            )
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
            grid=partition_cells(keys, node["materializedPartitions"]),
            states=PARTITION_STATES,
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

    async def _keys_in_state(self, request: Request, path: list[str], state: str) -> list[str]:
        """Every partition of the asset now in ``state`` (MISSING, FAILED), in order."""
        keys: list[str] = []
        offset = 0
        while True:
            data = await self._client.execute(
                request, PARTITION_STATUSES_QUERY, key=path, limit=STATUSES_PAGE, offset=offset
            )
            statuses = (data["assetNode"] or {}).get("partitionStatuses")
            if statuses is None:
                return keys
            keys += [p["partitionKey"] for p in statuses["partitions"] if p["status"] == state]
            offset += STATUSES_PAGE
            if offset >= statuses["counts"]["total"]:
                return keys

    async def backfill(self, request: Request) -> Response:
        """Backfill the asset over a from/to range, or over all its missing or failed
        partitions: one run per partition, each materializing only this asset."""
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
        mode = form.get("mode", "range")
        first, last = form.get("from") or None, form.get("to") or None
        keys: list[str] | None = None
        try:
            if not node["partitionsKind"]:
                raise PageError("A backfill runs partitions, and this asset is not partitioned.")
            if mode == "range":
                if first is None or last is None:
                    raise PageError("Choose the first and the last partition of the range.", 400)
            elif mode in ("missing", "failed"):
                keys = await self._keys_in_state(request, path, mode.upper())
                if not keys:
                    raise PageError(f"No partition of {key_string(path)} is {mode} now.", 400)
                first = last = None
            else:
                raise PageError(f"Unknown backfill choice {mode!r}.", 400)
            result = await self._client.execute(
                request,
                ASSET_BACKFILL_MUTATION,
                loc=node["locationName"],
                assets=[path],
                repo=node["repositoryName"],
                keys=keys,
                **{"from": first, "to": last},
            )
        except PageError as err:
            message = err.message
            if mode == "range" and message == "the backfill covers no partition":
                message = f"The range ends before it starts: {last} comes before {first}."
            return await self._asset_page(
                request,
                problems=[sentence(message)],
                status_code=err.status if err.status != 500 else 422,
                backfill_from=first,
                backfill_to=last,
            )
        backfill_id = result["launchBackfill"]["id"]
        return RedirectResponse(f"/backfills/{quote(backfill_id, safe='')}", status_code=303)

    # --- the global graph -------------------------------------------------------------

    async def _graph_page(
        self,
        request: Request,
        *,
        selected: set[str] | None = None,
        notices: list[str] | None = None,
        problems: list[str] | None = None,
        launched: list[dict[str, str]] | None = None,
        backfills: list[dict[str, str]] | None = None,
        range_from: str | None = None,
        range_to: str | None = None,
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
            backfills=backfills or [],
            range_from=range_from or "",
            range_to=range_to or "",
            partitioned=sorted(k for k, n in shown.items() if n["partitionsKind"]),
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
        first = str(dict(items).get("from", "")).strip() or None
        last = str(dict(items).get("to", "")).strip() or None
        partitioned = [k for k in wanted if every[k]["partitionsKind"]]
        if partitioned and (first is None or last is None):
            return await self._graph_page(
                request,
                selected=set(wanted),
                problems=[
                    f"{', '.join(partitioned)} {'is' if len(partitioned) == 1 else 'are'} "
                    "partitioned: give the first and the last partition key to backfill."
                ],
                range_from=first,
                range_to=last,
                status_code=400,
            )
        by_location: dict[str, list[str]] = {}
        backfill_by_location: dict[str, list[str]] = {}
        for key in wanted:
            chosen = backfill_by_location if key in partitioned else by_location
            chosen.setdefault(every[key]["locationName"], []).append(key)
        launched: list[dict[str, str]] = []
        backfills: list[dict[str, str]] = []
        problems: list[str] = []
        for location, keys in sorted(backfill_by_location.items()):
            # One backfill per location; the API refuses assets of different definitions.
            try:
                backfill = (
                    await self._client.execute(
                        request,
                        ASSET_BACKFILL_MUTATION,
                        loc=location,
                        assets=[every[k]["assetKey"]["path"] for k in keys],
                        repo=None,
                        keys=None,
                        **{"from": first, "to": last},
                    )
                )["launchBackfill"]
            except PageError as err:
                problems.append(f"{location}: {sentence(err.message)}")
                continue
            backfills.append(
                {"location": location, "id": backfill["id"], "assets": ", ".join(keys)}
            )
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
        if not problems and len(launched) + len(backfills) == 1:
            if launched:
                return RedirectResponse(f"/runs/{quote(launched[0]['run_id'])}", status_code=303)
            return RedirectResponse(
                f"/backfills/{quote(backfills[0]['id'], safe='')}", status_code=303
            )
        notices = []
        spanned = set(by_location) | set(backfill_by_location)
        if len(spanned) > 1:
            notices.append(
                f"The selection spans {len(spanned)} code locations, so it runs as one "
                + ("run or backfill" if backfill_by_location else "run")
                + " per location."
            )
        if by_location and backfill_by_location:
            notices.append(
                "Its unpartitioned assets run once, its partitioned ones as a backfill of "
                "the chosen partitions."
            )
        return await self._graph_page(
            request,
            selected=set(wanted) if problems else set(),
            notices=notices,
            problems=problems,
            launched=launched,
            backfills=backfills,
            range_from=first,
            range_to=last,
            status_code=200 if launched or backfills else 422,
        )

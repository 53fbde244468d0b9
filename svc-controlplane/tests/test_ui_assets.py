"""The asset pages over the real ASGI app: the catalog and its filters, an asset's page
(definition, lineage, history, metadata plots, partition grid, materialize), the global
asset graph and materializing a selection per location. Assets come from a snapshot built
by the real SDK, materializations from the agent's events, as in production."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from controlplane_testkit import EVENTS, Api
from sqlalchemy import update
from tether.controlplane.db.models import Run
from tether.controlplane.security import auth
from tether.controlplane.ui import assets as ui_assets
from tether.sdk import (
    AssetIn,
    AssetSpec,
    DailyPartitionsDefinition,
    Definitions,
    HourlyPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
)
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.snapshots import AssetNodeSnapshot, LocationSnapshot
from tether.shared.wire.work import PartitionKeysResult, WorkResult

HOSTILE = '<script>alert("x")</script>'
MATERIALIZE_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(autouse=True)
def _signed_in(api: Api) -> None:
    api.client.headers["Authorization"] = f"Bearer {api.admin_token}"


def snapshot() -> LocationSnapshot:
    @asset(key="raw/orders", group_name="ingest", owners=["team:data"], kinds=["python"])
    def orders() -> list[int]:
        return [1]

    @asset(
        key="warehouse/orders",
        ins={"orders": AssetIn(key="raw/orders")},
        deps=[AssetSpec("vendor/feed")],
        group_name="warehouse",
        code_version="2",
        owners=["team:analytics"],
        metadata={"primary_key": "id"},
        description="Orders with the broken rows dropped.",
    )
    def cleaned(orders: list[int]) -> list[int]:
        return orders

    @asset(partitions_def=StaticPartitionsDefinition(["eu", "us", "apac"]), group_name="reports")
    def regional() -> None: ...

    defs = Definitions(assets=[orders, cleaned, regional, AssetSpec("vendor/feed")])
    snap = defs.location_snapshot("loc")
    # A key no SDK would make, straight into the snapshot: the pages must escape it.
    snap.repositories[0].assets.append(
        AssetNodeSnapshot(
            key=["odd", HOSTILE], group_name=HOSTILE, description=HOSTILE, op_name="odd"
        )
    )
    return snap


def materialized(run_id: str, seq: int, key: list[str], **data: Any) -> dict[str, Any]:
    event = RunEvent(
        run_id=run_id,
        seq=seq,
        event_type=EventType.ASSET_MATERIALIZATION,
        timestamp=data.pop("at", time.time()),
        step_key="__".join(key),
        data={"asset_key": key, "metadata": {}, "partition": None, **data},
    )
    return event.model_dump(mode="json")


async def seeded(api: Api) -> str:
    """The snapshot, and a run that materialized raw/orders three times (rows 3, 5, 4),
    warehouse/orders before the last of them (so it is stale), and partition eu."""
    await api.load(snapshot())
    run_id = str((await api.launch(job="__asset_job"))["run"]["id"])
    t0 = time.time() - 3600
    events = [
        materialized(run_id, 1, ["raw", "orders"], at=t0, metadata={"rows": 3, "note": "a"}),
        materialized(run_id, 2, ["raw", "orders"], at=t0 + 60, metadata={"rows": 5}),
        materialized(run_id, 3, ["warehouse", "orders"], at=t0 + 70, code_version="2"),
        materialized(run_id, 4, ["raw", "orders"], at=t0 + 120, metadata={"rows": 4.5}),
        materialized(run_id, 5, ["regional"], at=t0 + 130, partition="eu"),
    ]
    await api.agent(EVENTS, items=events)
    return run_id


def form(*pairs: tuple[str, str]) -> dict[str, Any]:
    """A form post with repeated names (httpx's ``data`` takes a dict)."""
    return {"content": urlencode(pairs), "headers": MATERIALIZE_HEADERS}


def rows(html: str) -> dict[str, str]:
    """The catalog's rows: asset key -> status."""
    return dict(re.findall(r'<tr data-asset="([^"]+)" data-status="([a-z]+)"', html))


async def test_catalog_lists_assets_with_status_and_filters(api: Api) -> None:
    run_id = await seeded(api)
    resp = await api.client.get("/assets")
    assert resp.status_code == 200, resp.text
    html = resp.text
    assert 'href="/assets" class="active"' in html
    listed = rows(html)
    assert listed == {
        "odd/&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;": "never",
        "raw/orders": "materialized",
        "regional": "materialized",
        "vendor/feed": "external",
        "warehouse/orders": "stale",
    }
    assert "upstream raw/orders was materialized since" in html
    assert f'href="/runs/{run_id}"' in html
    assert 'href="/assets/warehouse/orders"' in html
    # Filters: key search, group, location, owner, status.
    assert set(rows((await api.client.get("/assets?q=ORDERS")).text)) == {
        "raw/orders",
        "warehouse/orders",
    }
    assert set(rows((await api.client.get("/assets?group=ingest")).text)) == {"raw/orders"}
    assert set(rows((await api.client.get("/assets?owner=team:analytics")).text)) == {
        "warehouse/orders"
    }
    assert set(rows((await api.client.get("/assets?status=stale")).text)) == {"warehouse/orders"}
    assert set(rows((await api.client.get("/assets?status=never")).text)) == {
        "odd/&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
    }
    assert len(rows((await api.client.get("/assets?location=loc")).text)) == 5
    nothing = (await api.client.get("/assets?location=elsewhere")).text
    assert rows(nothing) == {} and "No asset matches these filters" in nothing
    # Raw markup of the hostile key never reaches the page.
    assert HOSTILE not in html


async def test_asset_page_shows_definition_lineage_history_and_plots(api: Api) -> None:
    run_id = await seeded(api)
    resp = await api.client.get("/assets/raw/orders")
    assert resp.status_code == 200, resp.text
    html = resp.text
    assert 'data-asset="raw/orders"' in html and "team:data" in html
    # Downstream, linked; the lineage picture has this asset and its neighbour.
    assert re.search(r'class="asset-list downstream">.*href="/assets/warehouse/orders"', html, re.S)
    assert 'class="dag-node asset-node asset-current" data-asset="raw/orders"' in html
    assert 'data-asset="warehouse/orders" data-status="stale"' in html
    assert 'data-from="raw/orders" data-to="warehouse/orders"' in html
    # History: newest first, metadata shown, runs linked.
    history = re.search(r'<table class="grid history">(.*?)</table>', html, re.S)
    assert history is not None
    assert history.group(1).count(f'<tr data-run="{run_id}">') == 3
    assert history.group(1).index("4.5") < history.group(1).index("rows</span>=3")
    # One plot per numeric metadata key ("note" is text): rows, with 3 points.
    plots = re.findall(r'<figure class="chart" data-metadata="([^"]+)">', html)
    assert plots == ["rows"]
    assert html.count('class="chart-point"') == 3
    assert re.search(r'<polyline class="chart-line" points="[\d.]+,[\d.]+ [\d.]+,[\d.]+ ', html)
    # Editors see the launchpad, with a CSRF token.
    assert 'id="materialize-form"' in html and 'action="/asset-materialize/raw/orders"' in html

    cleaned = (await api.client.get("/assets/warehouse/orders")).text
    assert "Orders with the broken rows dropped." in cleaned
    assert "stale: upstream raw/orders was materialized since" in cleaned
    assert "primary_key" in cleaned and ">2</span>" in cleaned  # metadata, code version
    # An upstream no location computes is drawn and listed, as external.
    assert 'href="/assets/vendor/feed"' in cleaned
    assert 'data-asset="vendor/feed" data-status="external"' in cleaned
    assert 'href="/locations/loc/jobs/__asset_job?repo=' in cleaned


def grid_cells(html: str) -> dict[str, tuple[str, str | None]]:
    """The partition grid's cells: key -> (status, the run it links to or None)."""
    cells = {}
    for tag in re.findall(r'<(?:a|span) role="listitem" class="cell [^>]*>', html):
        key = re.search(r'data-partition="([^"]+)"', tag)
        status = re.search(r'data-status="([a-z_]+)"', tag)
        href = re.search(r'href="/runs/([^"]+)"', tag)
        assert key is not None and status is not None, tag
        cells[key.group(1)] = (status.group(1), href.group(1) if href else None)
    return cells


def legend(html: str) -> dict[str, str]:
    """The grid legend's counts: status -> count."""
    return dict(re.findall(r'<span data-count="([a-z_]+)">(\d+)</span>', html))


async def set_status(api: Api, run_id: str, status: str) -> None:
    """What the run worker's events would do (the runs' lifecycle is not under test here)."""
    async with api.cp.db.transaction() as session:
        await session.execute(update(Run).where(Run.id == run_id).values(status=status))


async def materialize_partition(api: Api, partition: str) -> str:
    resp = await api.client.post(
        "/asset-materialize/regional", data={"run_config": "{}", "partition": partition}
    )
    assert resp.status_code == 303, resp.text
    return str(resp.headers["location"].rsplit("/", 1)[-1])


async def test_partitioned_asset_shows_its_grid_and_picker(api: Api) -> None:
    run_id = await seeded(api)
    html = (await api.client.get("/assets/regional")).text
    assert grid_cells(html) == {
        "eu": ("materialized", run_id),
        "us": ("missing", None),
        "apac": ("missing", None),
    }
    assert "1 of 3 materialized" in html
    assert legend(html) == {"materialized": "1", "in_progress": "0", "failed": "0", "missing": "2"}
    picker = re.search(r'<select name="partition" id="partition-picker">(.*?)</select>', html, re.S)
    assert picker is not None and picker.group(1).count("<option") == 3
    # Partition column in history.
    assert '<td class="mono">eu</td>' in html
    # Nothing is in progress: the grid does not poll.
    assert 'hx-trigger="every 3s"' not in html
    # Materialize without choosing a partition: one sentence, nothing launched.
    resp = await api.client.post("/asset-materialize/regional", data={"run_config": ""})
    assert resp.status_code == 400
    assert "Choose the partition to materialize" in resp.text
    resp = await api.client.post(
        "/asset-materialize/regional", data={"run_config": "", "partition": "mars"}
    )
    assert resp.status_code == 400 and "&#39;mars&#39; is not a partition" in resp.text
    run = await api.run(await materialize_partition(api, "us"))
    assert run is not None


async def test_the_grid_colours_partitions_by_status_and_links_their_runs(api: Api) -> None:
    first = await seeded(api)
    # us: a run that failed; apac: a run still going; eu: materialized, then a newer run
    # of it is queued (so it is in progress again).
    failed = await materialize_partition(api, "us")
    await set_status(api, failed, "FAILURE")
    going = await materialize_partition(api, "apac")
    await set_status(api, going, "STARTED")
    html = (await api.client.get("/assets/regional")).text
    assert grid_cells(html) == {
        "eu": ("materialized", first),
        "us": ("failed", failed),
        "apac": ("in_progress", going),
    }
    assert legend(html) == {"materialized": "1", "in_progress": "1", "failed": "1", "missing": "0"}
    assert 'class="cell cell-failed"' in html and 'class="cell cell-in_progress"' in html
    # Something is in progress: the grid polls its fragment, which has the same cells.
    assert 'hx-get="/asset-partitions/regional?page=0" hx-trigger="every 3s"' in html
    fragment = (await api.client.get("/asset-partitions/regional")).text
    assert grid_cells(fragment) == grid_cells(html)
    # apac's run materializes it and ends: materialized, linked to that run; polling stops.
    await api.agent(EVENTS, items=[materialized(going, 1, ["regional"], partition="apac")])
    await set_status(api, going, "SUCCESS")
    after = (await api.client.get("/asset-partitions/regional")).text
    assert grid_cells(after)["apac"] == ("materialized", going)
    assert 'hx-trigger="every 3s"' not in after
    # The failed partition's newest attempt failed: a backfill of "all failed" is offered.
    page = (await api.client.get("/assets/regional")).text
    assert 'value="failed">Backfill all 1 failed</button>' in page
    assert 'value="missing">' not in page


async def test_a_big_definition_shows_its_newest_partitions_in_pages(api: Api) -> None:
    @asset(key="events/hourly", partitions_def=HourlyPartitionsDefinition(start="2025-06-01-00:00"))
    def hourly() -> int:
        return 1

    await api.load(Definitions(assets=[hourly]).location_snapshot("loc"))
    count = (
        await api.user('query { assetNode(assetKey: ["events", "hourly"]) { partitionKeyCount } }')
    )["assetNode"]["partitionKeyCount"]
    assert count > 10_000
    html = (await api.client.get("/assets/events/hourly")).text
    cells = grid_cells(html)
    assert len(cells) == ui_assets.GRID_LIMIT == 500
    assert f"Showing the newest 500 of {count}:" in html
    assert f'data-total="{count}"' in html and f"0 of {count} materialized" in html
    pages = -(-count // 500)
    assert f"page 1 of {pages}" in html and 'href="/assets/events/hourly?page=1#partitions"' in html
    assert "newer →" not in html
    newest = list(cells)
    # Page 1: the 500 before; the last page: the oldest ones, starting at the first key.
    older = list(grid_cells((await api.client.get("/assets/events/hourly?page=1")).text))
    assert len(older) == 500 and older[-1] < newest[0]
    oldest_html = (await api.client.get(f"/assets/events/hourly?page={pages + 5}")).text
    oldest = list(grid_cells(oldest_html))
    assert oldest[0] == "2025-06-01-00:00" and len(oldest) == count - 500 * (pages - 1)
    assert f"page {pages} of {pages}" in oldest_html and "← older" not in oldest_html
    # The pickers list the shown page only (not 10k options).
    assert html.count("<option") < 3 * 500 + 10


async def test_materialize_redirects_to_the_run_and_bad_config_is_one_sentence(
    api: Api,
) -> None:
    await seeded(api)
    bad = await api.client.post("/asset-materialize/raw/orders", data={"run_config": "[1"})
    assert bad.status_code == 400 and "Run config is not valid JSON" in bad.text
    assert "[1</textarea>" in bad.text  # the editor keeps what was typed
    resp = await api.client.post("/asset-materialize/raw/orders", data={"run_config": "{}"})
    assert resp.status_code == 303, resp.text
    run_id = resp.headers["location"].removeprefix("/runs/")
    runs = await api.user(
        "query($id: String!) { run(id: $id) { jobName tags } }",
        id=run_id,
    )
    assert runs["run"]["jobName"] == "__asset_job"
    assert runs["run"]["tags"]["tether/asset_selection"] == "raw/orders"
    # An external asset has nothing to materialize.
    ext = await api.client.post("/asset-materialize/vendor/feed", data={})
    assert ext.status_code == 422 and "does not compute asset" in ext.text


async def _session(api: Api, role: auth.Role) -> httpx.AsyncClient:
    """A browser-like client signed in (a session cookie) with a new token of ``role``."""
    async with api.cp.db.transaction() as session:
        token = await auth.create_token(session, name=f"ui-{role.value}", role=role)
    client = httpx.AsyncClient(transport=api.client._transport, base_url=str(api.client.base_url))
    form = await client.get("/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    signed = await client.post("/signin", data={"token": token, "csrf_token": csrf.group(1)})
    assert signed.status_code == 303, signed.text
    return client


async def test_materialize_needs_csrf_and_an_editor(api: Api) -> None:
    await seeded(api)
    editor = await _session(api, auth.Role.EDITOR)
    viewer = await _session(api, auth.Role.VIEWER)
    try:
        page = (await editor.get("/assets/raw/orders")).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        no_csrf = await editor.post("/asset-materialize/raw/orders", data={"run_config": "{}"})
        assert no_csrf.status_code == 403 and "security token" in no_csrf.text
        ok = await editor.post(
            "/asset-materialize/raw/orders", data={"run_config": "{}", "csrf_token": csrf.group(1)}
        )
        assert ok.status_code == 303 and ok.headers["location"].startswith("/runs/")

        seen = (await viewer.get("/assets/raw/orders")).text
        assert 'id="materialize-form"' not in seen and "may not materialize" in seen
        graph = (await viewer.get("/asset-graph")).text
        assert "Materialize selected" not in graph
        vcsrf = re.search(r'name="csrf_token" value="([^"]+)"', seen)
        assert vcsrf is not None
        refused = await viewer.post(
            "/asset-materialize/raw/orders", data={"run_config": "{}", "csrf_token": vcsrf.group(1)}
        )
        assert refused.status_code == 403, refused.text
        assert '<div class="notice notice-error" role="alert" id="problems"><div>' in refused.text
    finally:
        await editor.aclose()
        await viewer.aclose()


async def test_unknown_and_bad_keys_get_a_sentence_and_hostile_keys_are_escaped(
    api: Api,
) -> None:
    await seeded(api)
    missing = await api.client.get("/assets/no/such/asset")
    assert missing.status_code == 404
    assert "No loaded code location defines the asset &#39;no/such/asset&#39;." in missing.text
    assert "Traceback" not in missing.text
    empty = await api.client.get("/assets/raw//orders")
    assert empty.status_code == 404 and "is not an asset key" in empty.text
    long = await api.client.get("/assets/" + "x" * 300)
    assert long.status_code == 400 and "non-empty path of components" in long.text
    hostile_path = "/assets/odd/" + httpx.URL(HOSTILE).raw_path.decode()
    resp = await api.client.get("/assets/odd/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E")
    assert resp.status_code == 200, (hostile_path, resp.text)
    assert HOSTILE not in resp.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in resp.text
    # Its links quote every component.
    assert (
        'href="/assets/odd/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E"'
        in (await api.client.get("/assets")).text
    )
    graph = (await api.client.get("/asset-graph")).text
    assert HOSTILE not in graph


async def test_asset_graph_colours_nodes_and_materializes_a_selection_per_location(
    api: Api,
) -> None:
    await seeded(api)
    resp = await api.client.get("/asset-graph")
    assert resp.status_code == 200, resp.text
    html = resp.text
    states = dict(re.findall(r'data-asset="([^"]+)" data-status="([a-z]+)"', html))
    assert states["raw/orders"] == "materialized"
    assert states["warehouse/orders"] == "stale"
    assert states["vendor/feed"] == "external"
    assert states["regional"] == "materialized"
    assert 'data-from="raw/orders" data-to="warehouse/orders"' in html
    assert '<a href="/assets/warehouse/orders">' in html
    # External assets cannot be checked here; partitioned ones can (they run as a backfill).
    assert re.search(r'value="vendor/feed" data-asset-key="vendor/feed"\s+disabled', html)
    assert re.search(r'value="regional" data-asset-key="regional"\s+>', html)
    assert 'name="from" id="range-from"' in html

    none = await api.client.post("/asset-graph/materialize", data={})
    assert none.status_code == 400 and "Check the assets to materialize first." in none.text
    ext = await api.client.post("/asset-graph/materialize", data={"asset": "vendor/feed"})
    assert ext.status_code == 400 and "computed outside Tether" in ext.text
    one = await api.client.post(
        "/asset-graph/materialize", **form(("asset", "raw/orders"), ("asset", "warehouse/orders"))
    )
    assert one.status_code == 303, one.text
    run = await api.user(
        "query($id: String!) { run(id: $id) { tags } }",
        id=one.headers["location"].removeprefix("/runs/"),
    )
    assert run["run"]["tags"]["tether/asset_selection"] == "raw/orders,warehouse/orders"
    # A group filter narrows the picture.
    ingest = (await api.client.get("/asset-graph?group=ingest")).text
    assert set(re.findall(r'g class="dag-node asset-node[^"]*" data-asset="([^"]+)"', ingest)) == {
        "raw/orders"
    }


async def csrf_of(client: httpx.AsyncClient, url: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get(url)).text)
    assert found is not None
    return found.group(1)


async def test_backfill_a_range_from_the_asset_page_needs_csrf_and_an_editor(api: Api) -> None:
    await seeded(api)
    editor = await _session(api, auth.Role.EDITOR)
    viewer = await _session(api, auth.Role.VIEWER)
    try:
        page = (await editor.get("/assets/regional")).text
        assert 'id="backfill-form"' in page and 'action="/asset-backfill/regional"' in page
        # Two missing partitions (us, apac): offered as "all missing"; none failed.
        assert 'value="missing">Backfill all 2 missing</button>' in page
        assert 'value="failed">' not in page
        csrf = await csrf_of(editor, "/assets/regional")
        wanted = {"mode": "range", "from": "eu", "to": "us"}
        no_csrf = await editor.post("/asset-backfill/regional", data=wanted)
        assert no_csrf.status_code == 403 and "security token" in no_csrf.text
        ok = await editor.post("/asset-backfill/regional", data={**wanted, "csrf_token": csrf})
        assert ok.status_code == 303, ok.text
        backfill_id = ok.headers["location"].removeprefix("/backfills/")
        made = (
            await api.user(
                "query($id: String!) { backfill(id: $id) { partitionKeys jobName "
                "assetSelection { path } } }",
                id=backfill_id,
            )
        )["backfill"]
        assert made["partitionKeys"] == ["eu", "us"]
        assert made["assetSelection"] == [{"path": ["regional"]}]
        # The backfill's page and the list name the asset (linked), not the implicit job.
        shown = (await editor.get(f"/backfills/{backfill_id}")).text
        assert 'asset <a class="mono" href="/assets/regional" data-asset="regional">' in shown
        assert made["jobName"] not in shown
        listed = (await editor.get("/backfills")).text
        row = re.search(rf'<tr data-backfill="{backfill_id}">(.*?)</tr>', listed, re.S)
        assert row is not None
        assert '<a class="mono" href="/assets/regional" data-asset="regional">' in row.group(1)
        assert made["jobName"] not in row.group(1)
        # All missing: the partitions never materialized, as keys.
        missing = await editor.post(
            "/asset-backfill/regional", data={"mode": "missing", "csrf_token": csrf}
        )
        assert missing.status_code == 303, missing.text
        again = (
            await api.user(
                "query($id: String!) { backfill(id: $id) { partitionKeys } }",
                id=missing.headers["location"].removeprefix("/backfills/"),
            )
        )["backfill"]
        assert again["partitionKeys"] == ["us", "apac"]
        # Nothing failed: one sentence, no backfill.
        none = await editor.post(
            "/asset-backfill/regional", data={"mode": "failed", "csrf_token": csrf}
        )
        assert none.status_code == 400
        assert '<div class="notice notice-error" role="alert" id="problems"><div>' in none.text
        assert "No partition of regional is failed now." in none.text
        # A range that ends before it starts, and an unknown key: one sentence each.
        back = await editor.post(
            "/asset-backfill/regional",
            data={"mode": "range", "from": "apac", "to": "eu", "csrf_token": csrf},
        )
        assert back.status_code == 400
        assert "The range ends before it starts: eu comes before apac." in back.text
        # The form keeps the chosen ends.
        assert '<option value="apac" selected>' in back.text
        unknown = await editor.post(
            "/asset-backfill/regional",
            data={"mode": "range", "from": "eu", "to": "mars", "csrf_token": csrf},
        )
        assert unknown.status_code == 400 and "Unknown partition key &#39;mars&#39;." in (
            unknown.text
        )
        half = await editor.post(
            "/asset-backfill/regional", data={"mode": "range", "from": "eu", "csrf_token": csrf}
        )
        assert half.status_code == 400
        assert "Choose the first and the last partition of the range." in half.text
        plain = await editor.post("/asset-backfill/raw/orders", data={**wanted, "csrf_token": csrf})
        assert plain.status_code == 422 and "this asset is not partitioned" in plain.text

        # A viewer sees no form, and its post is refused by the API.
        seen = (await viewer.get("/assets/regional")).text
        assert 'id="backfill-form"' not in seen
        vcsrf = await csrf_of(viewer, "/assets/regional")
        refused = await viewer.post(
            "/asset-backfill/regional", data={**wanted, "csrf_token": vcsrf}
        )
        assert refused.status_code == 403, refused.text
        backfills = (await api.user("query { backfills(limit: 10) { id } }"))["backfills"]
        assert len(backfills) == 2
    finally:
        await editor.aclose()
        await viewer.aclose()


async def test_the_graph_backfills_partitioned_assets_sharing_a_definition(api: Api) -> None:
    days = DailyPartitionsDefinition(start="2026-11-01")

    @asset(key="daily/a", partitions_def=days)
    def a() -> int:
        return 1

    @asset(key="daily/b", deps=[AssetSpec("daily/a")], partitions_def=days)
    def b() -> None: ...

    @asset(key="regions", partitions_def=StaticPartitionsDefinition(["eu", "us"]))
    def regions() -> None: ...

    @asset(key="plain")
    def plain() -> int:
        return 1

    await api.load(Definitions(assets=[a, b, regions, plain]).location_snapshot("loc"))
    graph = "/asset-graph/materialize"
    # No range: one sentence naming the partitioned assets.
    bare = await api.client.post(graph, **form(("asset", "daily/a"), ("asset", "daily/b")))
    assert bare.status_code == 400
    assert "daily/a, daily/b are partitioned: give the first and the last partition key" in (
        bare.text
    )
    # Sharing one definition: one asset backfill over the range, and its page.
    both = await api.client.post(
        graph,
        **form(
            ("asset", "daily/a"),
            ("asset", "daily/b"),
            ("from", "2026-11-02"),
            ("to", "2026-11-03"),
        ),
    )
    assert both.status_code == 303, both.text
    assert both.headers["location"].startswith("/backfills/")
    made = (
        await api.user(
            "query($id: String!) { backfill(id: $id) { partitionKeys assetSelection { path } } }",
            id=both.headers["location"].removeprefix("/backfills/"),
        )
    )["backfill"]
    assert made == {
        "partitionKeys": ["2026-11-02", "2026-11-03"],
        "assetSelection": [{"path": ["daily", "a"]}, {"path": ["daily", "b"]}],
    }
    # Different definitions: refused, as one sentence, nothing launched.
    mixed = await api.client.post(
        graph,
        **form(("asset", "daily/a"), ("asset", "regions"), ("from", "eu"), ("to", "us")),
    )
    assert mixed.status_code == 422
    assert "loc: The assets do not share one partitions definition: regions differ from" in (
        mixed.text
    )
    # With an unpartitioned asset too: a run for it and a backfill for the partitioned one.
    with_run = await api.client.post(
        graph,
        **form(("asset", "plain"), ("asset", "regions"), ("from", "eu"), ("to", "us")),
    )
    assert with_run.status_code == 200, with_run.text
    assert "Its unpartitioned assets run once, its partitioned ones as a backfill" in with_run.text
    assert re.search(r'id="launched">\s*Launched 1 run:', with_run.text)
    assert re.search(r'id="launched-backfills">\s*Launched 1 backfill:', with_run.text)
    assert len((await api.user("query { backfills(limit: 10) { id } }"))["backfills"]) == 2


async def test_a_selection_across_locations_launches_one_run_per_location(api: Api) -> None:
    await seeded(api)

    @asset(key="mart/summary", deps=[AssetSpec("warehouse/orders")], group_name="mart")
    def summary() -> int:
        return 1

    other = Definitions(assets=[summary]).location_snapshot("other")
    await api.user(
        "mutation($c: JSON!) { addLocation(config: $c) { name } }",
        c={"name": "other", "module": "other_jobs"},
    )
    await api.load(other)
    html = (await api.client.get("/asset-graph")).text
    assert 'class="dag-edge cross-location" d=' in html
    assert 'data-from="warehouse/orders" data-to="mart/summary"' in html
    resp = await api.client.post(
        "/asset-graph/materialize", **form(("asset", "raw/orders"), ("asset", "mart/summary"))
    )
    assert resp.status_code == 200, resp.text
    assert "spans 2 code locations, so it runs as one run per location" in resp.text
    launched = re.search(
        r'<div class="notice notice-ok" role="status" id="launched">(.*?)</div>', resp.text, re.S
    )
    assert launched is not None and "Launched 2 runs" in launched.group(1)
    assert 'in <a href="/locations/loc">loc</a>: raw/orders' in launched.group(1)
    assert 'in <a href="/locations/other">other</a>: mart/summary' in launched.group(1)


async def test_a_time_window_asset_s_partitions_come_from_the_control_plane(api: Api) -> None:
    @asset(key="reports/daily", partitions_def=DailyPartitionsDefinition(start="2026-11-01"))
    def daily() -> int:
        return 1

    await api.load(Definitions(assets=[daily]).location_snapshot("loc"))
    page = (await api.client.get("/assets/reports/daily")).text
    # Computed from the snapshot (no agent asked): the grid and picker are in the page.
    assert 'hx-get="/asset-partitions/' not in page
    assert '<option value="2026-11-01"' in page and '<option value="2026-11-02"' in page


async def test_an_asset_whose_keys_the_control_plane_cannot_list_asks_an_agent(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before its first window ends the control plane lists no key (so would a partitions
    # kind only user code can list): the page asks an agent after it loads.
    @asset(key="reports/daily", partitions_def=DailyPartitionsDefinition(start="2099-11-01"))
    def daily() -> int:
        return 1

    await api.load(Definitions(assets=[daily]).location_snapshot("loc"))
    page = (await api.client.get("/assets/reports/daily")).text
    # The grid and the picker are fetched after the page loads.
    assert 'hx-get="/asset-partitions/reports/daily"' in page
    assert 'hx-get="/asset-partitions/reports/daily?picker=1"' in page
    monkeypatch.setattr(ui_assets, "KEYS_TIMEOUT_S", 0.3)
    slow = (await api.client.get("/asset-partitions/reports/daily")).text
    assert "No agent listed this asset" in slow and "Ask again" in slow
    monkeypatch.setattr(ui_assets, "KEYS_TIMEOUT_S", 10.0)

    async def answer() -> None:
        async with asyncio.timeout(20):
            while True:
                items = [i for i in await api.claim(wait_ms=200) if i.kind == "get_partition_keys"]
                if items:
                    break
        item = items[-1]
        keys = PartitionKeysResult(
            partition_set_name=item.payload["partition_set_name"],
            partition_keys=["2026-11-01", "2026-11-02"],
        )
        await api.submit(
            WorkResult(
                id=item.id,
                work_item_id=item.id,
                kind=item.kind,
                ok=True,
                payload=keys.model_dump(mode="json"),
            )
        )

    asked = asyncio.create_task(api.client.get("/asset-partitions/reports/daily?picker=1"))
    await answer()
    picker = (await asked).text
    # Newest first: the first option is the one a user most likely wants.
    assert re.findall(r'<option value="([^"]+)">', picker) == ["2026-11-02", "2026-11-01"]


def test_metadata_charts_plot_numbers_only_oldest_first() -> None:
    history = [  # newest first, as the API answers
        {"timestamp": 300.0, "runId": "r3", "metadata": {"rows": 30, "ok": True, "bad": "x"}},
        {"timestamp": 200.0, "runId": "r2", "metadata": {"rows": 10, "ratio": float("nan")}},
        {"timestamp": 100.0, "runId": "r1", "metadata": {"rows": 20, "flat": 7}},
    ]
    charts = {c.label: c for c in ui_assets.metadata_charts(history)}
    # Booleans, strings and NaN are not numbers to plot.
    assert set(charts) == {"rows", "flat"}
    rows_chart = charts["rows"]
    assert [p.run_id for p in rows_chart.points] == ["r1", "r2", "r3"]
    xs = [p.x for p in rows_chart.points]
    assert xs == sorted(xs) and xs[0] == rows_chart.left and xs[-1] == rows_chart.right
    # Higher values are drawn higher (smaller y): the top is the max, the bottom the min.
    ys = {p.value: p.y for p in rows_chart.points}
    assert ys[30] == rows_chart.top and ys[10] == rows_chart.bottom and ys[10] > ys[20] > ys[30]
    assert rows_chart.latest == 30
    # One value: a dot in the middle of a band around it.
    flat = charts["flat"]
    assert len(flat.points) == 1 and flat.low < 7 < flat.high
    assert flat.points[0].y == pytest.approx((flat.top + flat.bottom) / 2)


REPORT = """
mutation($key: [String!]!, $metadata: JSON, $reportId: String) {
  reportAssetMaterialization(assetKey: $key, metadata: $metadata, reportId: $reportId) {
    runId
  }
}"""


async def test_a_reported_materialization_renders_as_reported(api: Api) -> None:
    run_id = await seeded(api)
    for rows_count, report_id in ((10, "feed-1"), (12, None)):
        await api.user(
            REPORT, key=["vendor", "feed"], metadata={"rows": rows_count}, reportId=report_id
        )
    html = (await api.client.get("/assets/vendor/feed")).text
    history = re.search(r'<table class="grid history">(.*?)</table>', html, re.S)
    assert history is not None, html
    body = history.group(1)
    assert body.count("data-reported=") == 2 and 'data-reported="feed-1"' in body
    assert body.count(">reported</span>") == 2 and "/runs/" not in body
    assert "rows</span>=12" in body
    # The metadata plot draws both reports, as points with no run link.
    assert html.count('class="chart-point chart-point-reported"') == 2
    assert "(reported)</title>" in html
    catalog = (await api.client.get("/assets")).text
    row = re.search(r'<tr data-asset="vendor/feed".*?</tr>', catalog, re.S)
    assert row is not None and '<span class="muted">reported</span>' in row.group(0)
    # A run's materializations keep their run links beside a report of the same asset.
    await api.user(REPORT, key=["raw", "orders"], metadata={"rows": 6})
    orders = (await api.client.get("/assets/raw/orders")).text
    assert orders.count(f'<tr data-run="{run_id}">') == 3 and "data-reported=" in orders

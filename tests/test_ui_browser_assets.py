"""The asset pages in a real browser (Debian's Chromium driven by Playwright) against the
real `tether dev` stack serving the example location: the catalog and the asset graph,
materializing an asset from its page, a selection from the graph, one partition of the
daily report, then a backfill of two more of its partitions from its page; each run succeeds,
its materialization shows in the asset's history and its partitions' cells turn materialized.
Screenshots are kept under test-artifacts/ui/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from stack_api import gql, sign_in, wait_for, wait_location_loaded
from test_ui_browser import ARTIFACTS, browser  # noqa: F401 (the Chromium fixture)

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

EXAMPLE_ASSETS = {
    "raw/orders",
    "raw/customers",
    "warehouse/orders",
    "warehouse/customer_totals",
    "warehouse/top_customers",
    "reports/daily_revenue",
    "vendor/fx_rates",
}


def asset_keys(stack: DevStack) -> set[str]:
    nodes = gql(stack, "{ assetNodes { assetKey { path } } }")["assetNodes"]
    return {"/".join(n["assetKey"]["path"]) for n in nodes}


def watch(page: Any, stack: DevStack) -> tuple[list[str], list[str]]:
    """Collect CSP violations and requests leaving the control plane."""
    csp: list[str] = []
    foreign: list[str] = []
    page.on(
        "console",
        lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith(stack.config.url) or r.url.startswith("data:")
            else foreign.append(r.url)
        ),
    )
    return csp, foreign


def run_succeeds(page: Any) -> str:
    """Wait on a run page until its run succeeded; return the run id."""
    page.wait_for_url("**/runs/*")
    run_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_selector('#live[data-status="SUCCESS"]', timeout=120_000)
    return run_id


def test_catalog_graph_and_materializing_from_the_pages(
    stack: DevStack,
    browser: Any,  # noqa: F811
) -> None:
    wait_location_loaded(stack)
    wait_for(
        "the example assets",
        lambda: EXAMPLE_ASSETS <= asset_keys(stack),
        timeout=60,
        stack=stack,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, stack)
    csp, foreign = watch(page, stack)
    try:
        # The catalog: every example asset, the external one marked, filters by status.
        page.goto(f"{stack.config.url}/assets")
        catalog = page.locator("#asset-table tbody tr")
        assert {catalog.nth(i).get_attribute("data-asset") for i in range(catalog.count())} >= (
            EXAMPLE_ASSETS
        )
        assert page.locator('tr[data-asset="vendor/fx_rates"][data-status="external"]').count()
        page.screenshot(path=str(ARTIFACTS / "assets-catalog.png"), full_page=True)
        page.select_option("select[name=group]", "warehouse")
        page.wait_for_url("**/assets?*group=warehouse*")
        page.locator('#asset-table tr[data-asset="raw/orders"]').wait_for(state="detached")
        assert page.locator("#asset-table tbody tr").count() == 3

        # The asset page: materialize raw/orders, watch the run, see it in the history.
        page.goto(f"{stack.config.url}/assets/raw/orders")
        assert page.locator("svg.asset-dag g.asset-node.asset-current").count() == 1
        page.get_by_role("button", name="Materialize").click()
        first = run_succeeds(page)
        page.goto(f"{stack.config.url}/assets/raw/orders")
        assert page.locator(f'#history tr[data-run="{first}"]').count() == 1
        assert page.locator('figure.chart[data-metadata="rows"] circle.chart-point').count() >= 1

        # warehouse/orders reads raw/orders' stored value through the IO manager.
        page.goto(f"{stack.config.url}/assets/warehouse/orders")
        page.get_by_role("button", name="Materialize").click()
        second = run_succeeds(page)
        page.goto(f"{stack.config.url}/assets/warehouse/orders")
        assert page.locator(f'#history tr[data-run="{second}"]').count() == 1
        # Its numeric metadata (rows, dropped, revenue) each get a plot.
        assert page.locator("figure.chart").count() == 3
        page.screenshot(path=str(ARTIFACTS / "asset-warehouse-orders.png"), full_page=True)

        # The graph: a node per asset, coloured; select the rest and materialize them.
        page.goto(f"{stack.config.url}/asset-graph")
        graph = page.locator("svg.asset-dag")
        assert graph.locator("g.asset-node").count() >= len(EXAMPLE_ASSETS)
        assert graph.locator('g.asset-node[data-asset="raw/orders"].asset-materialized').count()
        assert graph.locator('g.asset-node[data-asset="vendor/fx_rates"].asset-external').count()
        for key in ("raw/customers", "warehouse/customer_totals", "warehouse/top_customers"):
            page.check(f'input[data-asset-key="{key}"]')
            # The picture highlights what is checked (static/tether.js).
            graph.locator(f'g.asset-node.selected[data-asset="{key}"]').wait_for()
        page.screenshot(path=str(ARTIFACTS / "asset-graph.png"), full_page=True)
        page.get_by_role("button", name="Materialize selected").click()
        third = run_succeeds(page)
        page.goto(f"{stack.config.url}/assets/warehouse/top_customers")
        assert page.locator(f'#history tr[data-run="{third}"]').count() == 1

        # One partition of the daily report: the newest, chosen in the picker by default.
        page.goto(f"{stack.config.url}/assets/reports/daily_revenue")
        page.locator("#partitions .partition-grid").wait_for(timeout=30_000)
        partition = page.locator("select#partition-picker").input_value()
        assert partition and re.fullmatch(r"\d{4}-\d{2}-\d{2}", partition)
        page.get_by_role("button", name="Materialize partition").click()
        fourth = run_succeeds(page)
        page.goto(f"{stack.config.url}/assets/reports/daily_revenue")
        assert page.locator(f'#history tr[data-run="{fourth}"]').count() == 1
        cell = page.locator(f'.cell[data-partition="{partition}"]')
        assert cell.get_attribute("data-status") == "materialized"
        assert cell.get_attribute("href") == f"/runs/{fourth}"

        # A backfill of the two partitions before it, from the asset's page.
        keys = [o.get_attribute("value") for o in page.locator("select#backfill-from option").all()]
        assert keys[-1] == partition and len(keys) >= 3
        first, second = keys[-3], keys[-2]
        for key in (first, second):
            assert (
                page.locator(f'.cell[data-partition="{key}"]').get_attribute("data-status")
                == "missing"
            )
        page.select_option("select#backfill-from", first)
        page.select_option("select#backfill-to", second)
        page.get_by_role("button", name="Backfill range").click()
        page.wait_for_url("**/backfills/*")
        # The backfill's page names the asset (linked), not the implicit asset job.
        assets = page.locator('.backfill-assets a[data-asset="reports/daily_revenue"]')
        assert assets.get_attribute("href") == "/assets/reports/daily_revenue"
        assert "__asset_job" not in page.locator(".page-head .meta").inner_text()
        # Live until both partitions' runs succeeded.
        page.locator("#backfill-live .partition-grid a.cell-success").nth(1).wait_for(
            timeout=180_000
        )
        assert page.locator("#backfill-live .partition-grid .cell").count() == 2
        page.screenshot(path=str(ARTIFACTS / "asset-backfill.png"), full_page=True)
        assets.click()
        page.wait_for_url("**/assets/reports/daily_revenue")
        for key in (first, second, partition):
            page.locator(f'.cell[data-partition="{key}"][data-status="materialized"]').wait_for(
                timeout=30_000
            )
        counts = page.locator(".partition-legend")
        assert counts.locator('[data-count="materialized"]').inner_text() == "3"
        page.screenshot(path=str(ARTIFACTS / "asset-daily-revenue.png"), full_page=True)

        page.goto(f"{stack.config.url}/asset-graph")
        page.screenshot(path=str(ARTIFACTS / "asset-graph-after.png"), full_page=True)
    finally:
        page.close()
    assert foreign == []
    assert csp == []

"""``tether asset list|show|materialize|report|wipe`` against a real control plane HTTP server,
with a location whose snapshot the real SDK built and materializations from run events."""

from __future__ import annotations

import functools
import json
import time

import pytest
from controlplane_testkit import serving
from tether.client.asset_cli import app
from tether.controlplane.runs import lifecycle
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import locations
from tether.sdk import (
    AssetSpec,
    DailyPartitionsDefinition,
    Definitions,
    StaticPartitionsDefinition,
    asset,
)
from tether.shared.wire.runs import EventType, RunEvent

pytestmark = pytest.mark.integration


@pytest.fixture
def backend() -> str:
    # The CLI only talks GraphQL; the storage suites cover both databases.
    return "sqlite"


def _defs() -> Definitions:
    @asset(group_name="raw", code_version="1")
    def orders() -> list[int]:
        return [1]

    @asset
    def report(orders: list[int]) -> int:
        return len(orders)

    return Definitions(assets=[orders, report])


async def test_asset_commands(settings: ControlPlaneSettings) -> None:
    async with serving(settings) as served:
        admin = await served.token("adm", auth.Role.ADMIN)
        viewer = await served.token("view", auth.Role.VIEWER)
        db = served.cp.db
        async with db.transaction() as session:
            # The settings' workspace seeds location "loc"; its code server answers here.
            await locations.mark_loaded(session, "default", "loc", _defs().location_snapshot("loc"))
        tether = functools.partial(served.cli, app, token=admin)

        listed = await tether("list", token=viewer)
        assert listed.exit_code == 0, listed.output
        assert "orders" in listed.stdout and "never materialized" in listed.stdout
        launched = await tether("materialize", "report", "--location", "loc", "--json")
        assert launched.exit_code == 0, launched.output
        run = json.loads(launched.stdout)
        assert run["tags"]["tether/asset_selection"] == "report"
        refused = await tether("materialize", "report", "--location", "loc", token=viewer)
        assert refused.exit_code == 1 and "FORBIDDEN" in refused.stderr
        missing = await tether("materialize", "nope", "--location", "loc")
        assert missing.exit_code == 1 and "does not compute asset 'nope'" in missing.stderr
        # The run's worker reports the materialization.
        event = RunEvent(
            run_id=run["id"],
            seq=1,
            event_type=EventType.ASSET_MATERIALIZATION,
            timestamp=time.time(),
            data={"asset_key": ["orders"], "metadata": {"rows": 1}, "code_version": "1"},
        )
        async with db.transaction() as session:
            await lifecycle.store_events(session, "default", [event])
        shown = await tether("show", "orders", token=viewer)
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.startswith("orders (fresh)")
        assert "downstream: report" in shown.stdout and f"run {run['id']}" in shown.stdout
        assert '{"rows": 1}' in shown.stdout
        as_json = json.loads((await tether("list", "--group", "raw", "--json")).stdout)
        assert [n["assetKey"]["path"] for n in as_json] == [["orders"]]
        unknown = await tether("show", "nope/nope", token=viewer)
        assert unknown.exit_code == 1 and "no location defines asset" in unknown.stderr
        wiped = await tether("wipe", "orders")
        assert wiped.exit_code == 0 and wiped.stdout == "forgot 1 materialization record(s)\n"
        assert "never materialized" in (await tether("show", "orders")).stdout


async def test_materialize_with_a_range_launches_an_asset_backfill(
    settings: ControlPlaneSettings,
) -> None:
    daily = DailyPartitionsDefinition(start="2026-01-01", end="2026-01-08")

    @asset(partitions_def=daily)
    def events() -> int:
        return 1

    @asset(partitions_def=daily)
    def summary(events: int) -> int:
        return events

    async with serving(settings) as served:
        snapshot = Definitions(assets=[events, summary]).location_snapshot("loc")
        admin = await served.token("adm", auth.Role.ADMIN)
        async with served.cp.db.transaction() as session:
            await locations.mark_loaded(session, "default", "loc", snapshot)
        tether = functools.partial(served.cli, app, token=admin)

        base = ("materialize", "events", "summary", "--location", "loc")
        done = await tether(*base, "--from", "2026-01-02", "--to", "2026-01-04", "--tag", "a=b")
        assert done.exit_code == 0, done.output
        assert "__asset_job: 3 partition(s), 2026-01-02 .. 2026-01-04" in done.stdout
        tail = json.loads((await tether(*base, "--from", "2026-01-06", "--json")).stdout)
        assert tail["partitionKeys"] == ["2026-01-06", "2026-01-07"]
        assert tail["assetSelection"] == [{"path": ["events"]}, {"path": ["summary"]}]
        both = await tether(*base, "--from", "2026-01-02", "--partition", "2026-01-03")
        assert both.exit_code == 2 and "not both" in both.output
        unknown = await tether(*base, "--to", "2030-01-01")
        assert unknown.exit_code == 1 and "unknown partition key '2030-01-01'" in unknown.stderr
        # One partition, as before: a single run.
        one = json.loads((await tether(*base, "--partition", "2026-01-03", "--json")).stdout)
        assert one["tags"]["tether/partition"] == "2026-01-03"


async def test_report_records_a_run_less_materialization(settings: ControlPlaneSettings) -> None:
    regions = StaticPartitionsDefinition(["eu", "us"])
    defs = Definitions(
        assets=[AssetSpec("vendor/feed"), AssetSpec("vendor/regional", partitions_def=regions)]
    )
    async with serving(settings) as served:
        editor = await served.token("ed", auth.Role.EDITOR)
        viewer = await served.token("view", auth.Role.VIEWER)
        async with served.cp.db.transaction() as session:
            await locations.mark_loaded(session, "default", "loc", defs.location_snapshot("loc"))
        tether = functools.partial(served.cli, app, token=editor)

        reported = await tether(
            "report",
            "vendor/feed",
            "--metadata",
            '{"rows": 42}',
            "--description",
            "nightly drop",
            "--report-id",
            "drop-2026-12-02",
        )
        assert reported.exit_code == 0, reported.output
        assert reported.stdout.startswith("reported a materialization of vendor/feed at ")
        assert "(report drop-2026-12-02)" in reported.stdout
        again = await tether("report", "vendor/feed", "--report-id", "drop-2026-12-02", "--json")
        assert again.exit_code == 0, again.output
        record = json.loads(again.stdout)
        assert record["runId"] is None and record["metadata"] == {"rows": 42}  # the first one
        shown = await tether("show", "vendor/feed", token=viewer)
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.count(" reported") == 1 and '{"rows": 42}' in shown.stdout
        listed = await tether("list", token=viewer)
        assert "reported" in listed.stdout
        part = await tether("report", "vendor/regional", "--partition", "us")
        assert part.exit_code == 0 and "vendor/regional partition us" in part.stdout
        for args, expected in (
            (("vendor/regional",), "is partitioned: give partitionKey"),
            (("vendor/regional", "--partition", "asia"), "'asia' is not a partition"),
            (("nope",), "no loaded location defines asset 'nope'"),
            (("vendor/feed", "--report-id", "bad id"), "reportId must be 1 to 64"),
        ):
            refused = await tether("report", *args)
            assert refused.exit_code == 1 and expected in refused.stderr, refused.output
        for metadata, expected in (("[1]", "must be a JSON object"), ("{", "is not JSON")):
            bad = await tether("report", "vendor/feed", "--metadata", metadata)
            assert bad.exit_code == 2 and expected in bad.output, bad.output
        forbidden = await tether("report", "vendor/feed", token=viewer)
        assert forbidden.exit_code == 1 and "FORBIDDEN" in forbidden.stderr

"""An asset backfill through the whole stack (control plane, agent, code server, run workers).

The location (tests/assets/asset_backfill_location.py) has a daily-partitioned chain of two
assets; a backfill of three days of both makes one run per day of the implicit asset job,
each run computes both assets of its day (the summary fails unless it read its own day's
events), every run succeeds, each asset has one materialization per day, and the partition
statuses say MATERIALIZED for those days and MISSING for the rest of January.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stack_api import gql, wait_for, wait_location_loaded

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

LOCATION_FILE = Path(__file__).parent / "assets" / "asset_backfill_location.py"
DAYS = ["2026-01-05", "2026-01-06", "2026-01-07"]

LAUNCH = """
mutation($loc: String!) {
  launchBackfill(locationName: $loc, assetSelection: [["raw_events"], ["daily_summary"]],
                 fromKey: "2026-01-05", toKey: "2026-01-07") {
    id jobName partitionKeys assetSelection { path }
  }
}"""
BACKFILL = """
query($id: String!) {
  backfill(id: $id) { status partitions { partitionKey runId runStatus } }
}"""
ASSET = """
query($key: [String!]!) {
  assetNode(assetKey: $key) {
    partitionKeyCount
    materializations(limit: 50) { runId partition }
    partitionStatuses(limit: 100) {
      counts { total materialized missing failed inProgress }
      partitions { partitionKey status runId }
    }
  }
}"""


def test_an_asset_backfill_materializes_each_partition_of_both_assets(
    stack: DevStack, tmp_path: Path
) -> None:
    # Values are stored under the working directory (.tether/storage), a temp one here.
    gql(
        stack,
        "mutation($config: JSON!) { addLocation(config: $config) { name } }",
        config={
            "name": "assetbackfill",
            "python_file": str(LOCATION_FILE),
            "working_directory": str(tmp_path),
        },
    )
    wait_location_loaded(stack, "assetbackfill")
    nodes = gql(
        stack,
        '{ assetNodes(locationName: "assetbackfill") { assetKey { path } opName jobNames '
        "partitionsKind } }",
    )["assetNodes"]
    assert nodes == [
        {
            "assetKey": {"path": [key]},
            "opName": key,
            "jobNames": ["__asset_job"],
            "partitionsKind": "TIME_WINDOW",
        }
        for key in ("daily_summary", "raw_events")
    ], nodes
    launched = gql(stack, LAUNCH, loc="assetbackfill")["launchBackfill"]
    assert launched["jobName"] == "__asset_job" and launched["partitionKeys"] == DAYS
    assert launched["assetSelection"] == [{"path": ["daily_summary"]}, {"path": ["raw_events"]}]

    def finished() -> dict[str, Any] | None:
        backfill = gql(stack, BACKFILL, id=launched["id"])["backfill"]
        statuses = [p["runStatus"] for p in backfill["partitions"]]
        done = all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses)
        return backfill if backfill["status"] == "COMPLETED" and done else None

    backfill = wait_for("the backfill's runs to finish", finished, timeout=180, stack=stack)
    runs = {p["partitionKey"]: p["runId"] for p in backfill["partitions"]}
    assert [p["runStatus"] for p in backfill["partitions"]] == ["SUCCESS"] * 3, backfill
    assert len(set(runs.values())) == 3

    for key in ("raw_events", "daily_summary"):
        # The run's events (and so its materializations) may land just after its status.
        def recorded(key: str = key) -> dict[str, Any] | None:
            node = gql(stack, ASSET, key=[key])["assetNode"]
            return node if len(node["materializations"]) >= 3 else None

        node = wait_for(f"{key}'s materializations", recorded, stack=stack)
        assert sorted((m["partition"], m["runId"]) for m in node["materializations"]) == [
            (day, runs[day]) for day in DAYS
        ], key
        statuses = node["partitionStatuses"]
        assert node["partitionKeyCount"] == 31
        assert statuses["counts"] == {
            "total": 31,
            "materialized": 3,
            "missing": 28,
            "failed": 0,
            "inProgress": 0,
        }, key
        by_key = {p["partitionKey"]: (p["status"], p["runId"]) for p in statuses["partitions"]}
        for day in DAYS:
            assert by_key[day] == ("MATERIALIZED", runs[day])
        assert by_key["2026-01-04"] == ("MISSING", None)
        assert by_key["2026-01-08"] == ("MISSING", None)

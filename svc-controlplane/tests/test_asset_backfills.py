"""Partitioned assets in the control plane, on both databases: the keys of every partitions
kind (computed here, equal to the SDK's, across DST), pages of them, partition statuses
from materializations and runs, and asset backfills through the real backfill daemon and
work-queue path (cancel and retry included), with the code server's answers computed by
the real SDK definitions."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from controlplane_testkit import EVENTS, Api
from sqlalchemy import update
from tether.controlplane.api.partitions import definition_keys
from tether.controlplane.daemons import BackfillDaemon
from tether.controlplane.db.models import Run
from tether.sdk import (
    AssetSpec,
    DailyPartitionsDefinition,
    Definitions,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
    asset,
    define_asset_job,
)
from tether.sdk._partitions import PartitionsDefinition
from tether.sdk._snapshot import partitions_snapshot
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import PartitionRunConfigResult, WorkItem, WorkResult

KEYS = """
query($key: [String!]!, $limit: Int, $offset: Int) {
  assetNode(assetKey: $key) { partitionsKind partitionKeyCount
    partitionKeys(limit: $limit, offset: $offset) }
}"""
STATUSES = """
query($key: [String!]!, $limit: Int, $offset: Int) {
  assetNode(assetKey: $key) {
    partitionStatuses(limit: $limit, offset: $offset) {
      counts { total materialized missing failed inProgress }
      partitions { partitionKey status runId }
    }
  }
}"""
ONE_STATUS = """
query($key: [String!]!, $partition: String!) {
  assetNode(assetKey: $key) { partitionStatus(partitionKey: $partition) { status runId } }
}"""
LAUNCH = """
mutation($loc: String!, $assets: [[String!]!], $job: String, $keys: [String!],
         $from: String, $to: String) {
  launchBackfill(locationName: $loc, assetSelection: $assets, jobName: $job,
                 partitionKeys: $keys, fromKey: $from, toKey: $to, tags: {team: "data"}) {
    id status jobName partitionSetName partitionKeys assetSelection { path }
  }
}"""
BACKFILL = """
query($id: String!) {
  backfill(id: $id) {
    status runsLaunched retryablePartitionKeys assetSelection { path }
    partitions { partitionKey runId runStatus attempts }
  }
}"""
RETRY = "mutation($id: String!) { retryBackfill(id: $id) { status } }"
CANCEL = "mutation($id: String!) { cancelBackfill(id: $id) { status } }"
MATERIALIZE = """
mutation($loc: String!, $keys: [[String!]!]!, $partition: String) {
  materializeAssets(locationName: $loc, assetKeys: $keys, partitionKey: $partition) {
    ... on LaunchRunSuccess { run { id } }
  }
}"""

DAILY = DailyPartitionsDefinition(start="2026-01-01", end="2026-01-10")
#: Every time-window kind, with ends in the past so the keys do not move during a test;
#: the hourly one spans New York's fall-back (2025-11-02 01:00 happens twice).
KINDS: dict[str, PartitionsDefinition] = {
    "hourly_ny": HourlyPartitionsDefinition(
        start="2025-11-01T20:00", end="2025-11-02T05:00", timezone="America/New_York"
    ),
    "daily": DAILY,
    "weekly": WeeklyPartitionsDefinition(start="2026-01-01", end="2026-03-01", day_offset=1),
    "monthly": MonthlyPartitionsDefinition(start="2025-01-01", end="2026-01-01"),
    "custom": TimeWindowPartitionsDefinition(
        cron_schedule="30 */6 * * 1-5",
        start="2026-03-01",
        end="2026-03-20",
        fmt="%Y-%m-%dT%H:%M",
        timezone="Asia/Kolkata",
    ),
    "static": StaticPartitionsDefinition(["eu", "us", "asia"]),
    # No end: its keys grow with time (today's window included, end_offset=1).
    "open_daily": DailyPartitionsDefinition(start="2026-01-01", end_offset=1),
}


def kinds_defs() -> Definitions:
    assets = []
    for name, parts in KINDS.items():

        @asset(name=name, partitions_def=parts)
        def _one() -> None: ...

        assets.append(_one)
    return Definitions(assets=assets)


def backfill_defs() -> Definitions:
    @asset(partitions_def=DAILY)
    def raw_events() -> int:
        return 1

    @asset(partitions_def=DAILY)
    def daily_summary(raw_events: int) -> int:
        return raw_events

    @asset(partitions_def=StaticPartitionsDefinition(["eu", "us"]))
    def regional() -> None: ...

    @asset
    def plain() -> None: ...

    return Definitions(
        assets=[raw_events, daily_summary, regional, plain, AssetSpec("vendor/feed")],
        jobs=[define_asset_job("events_job", selection=[raw_events, daily_summary])],
    )


async def test_partition_keys_of_every_kind_are_the_sdks_even_across_dst(api: Api) -> None:
    defs = kinds_defs()
    await api.load(defs.location_snapshot("loc"))
    for name, parts in KINDS.items():
        before = parts.get_partition_keys()
        node = (await api.user(KEYS, key=[name]))["assetNode"]
        after = parts.get_partition_keys()
        assert node["partitionKeys"] in (before, after), name
        assert node["partitionKeyCount"] == len(node["partitionKeys"])
        assert node["partitionsKind"] == ("STATIC" if name == "static" else "TIME_WINDOW")
    hourly = (await api.user(KEYS, key=["hourly_ny"]))["assetNode"]["partitionKeys"]
    # The repeated hour has two keys, the second with its offset, in time order.
    assert hourly[4:8] == [
        "2025-11-02-00:00",
        "2025-11-02-01:00",
        "2025-11-02-01:00-0500",
        "2025-11-02-02:00",
    ]
    assert len(hourly) == 10  # 20:00 EDT .. 05:00 EST is ten real hours
    # end_offset=1: today's window (in progress) is a key too; the day may turn meanwhile.
    before = datetime.now(UTC).strftime("%Y-%m-%d")
    open_keys = (await api.user(KEYS, key=["open_daily"]))["assetNode"]["partitionKeys"]
    after = datetime.now(UTC).strftime("%Y-%m-%d")
    assert open_keys[0] == "2026-01-01" and open_keys[-1] in (before, after)


def test_keys_asked_again_later_extend_the_computed_ones_as_the_sdk_would() -> None:
    # The control plane keeps computed windows and adds the ones that ended since.
    moments = [
        datetime(2025, 11, 1, 12, tzinfo=UTC),
        datetime(2025, 11, 2, 7, 30, tzinfo=UTC),  # just past New York's repeated hour
        datetime(2025, 11, 3, 7, 31, tzinfo=UTC),
        datetime(2025, 11, 1, 13, tzinfo=UTC),  # earlier again: computed afresh
    ]
    for parts in (
        HourlyPartitionsDefinition(start="2025-10-31", timezone="America/New_York", end_offset=-2),
        DailyPartitionsDefinition(start="2025-10-01", end_offset=2),
        WeeklyPartitionsDefinition(start="2025-09-01", end="2025-11-02T12:00"),
    ):
        described = partitions_snapshot(parts)
        for now in moments:
            assert definition_keys(described, now) == parts.get_partition_keys(now), (parts, now)


async def test_partition_keys_come_in_bounded_pages(api: Api) -> None:
    await api.load(kinds_defs().location_snapshot("loc"))
    every = DAILY.get_partition_keys()
    page = (await api.user(KEYS, key=["daily"], limit=4, offset=3))["assetNode"]
    assert page["partitionKeys"] == every[3:7] and page["partitionKeyCount"] == len(every)
    past = (await api.user(KEYS, key=["daily"], limit=4, offset=100))["assetNode"]
    assert past["partitionKeys"] == []
    for limit, offset in ((10_001, 0), (-1, 0), (5, -1)):
        body = await api.post(
            KEYS, token=api.admin_token, key=["daily"], limit=limit, offset=offset
        )
        assert "limit must be within 0..10000 and offset >= 0" in str(body["errors"])


def _materialized(run_id: str, seq: int, key: list[str], partition: str) -> dict[str, Any]:
    return RunEvent(
        run_id=run_id,
        seq=seq,
        event_type=EventType.ASSET_MATERIALIZATION,
        timestamp=time.time(),
        step_key="__".join(key),
        data={"asset_key": key, "metadata": {}, "partition": partition},
    ).model_dump(mode="json")


async def _set_status(api: Api, run_id: str, status: str) -> None:
    # What the run worker's events would do; the runs' own lifecycle is not under test.
    async with api.cp.db.transaction() as session:
        await session.execute(update(Run).where(Run.id == run_id).values(status=status))


async def _materialize(api: Api, keys: list[list[str]], partition: str) -> str:
    data = await api.user(MATERIALIZE, loc="loc", keys=keys, partition=partition)
    return str(data["materializeAssets"]["run"]["id"])


async def test_partition_statuses_follow_materializations_and_the_newest_runs(api: Api) -> None:
    await api.load(backfill_defs().location_snapshot("loc"))
    ok = await _materialize(api, [["raw_events"], ["daily_summary"]], "2026-01-01")
    await api.agent(
        EVENTS,
        items=[
            _materialized(ok, 1, ["raw_events"], "2026-01-01"),
            _materialized(ok, 2, ["daily_summary"], "2026-01-01"),
        ],
    )
    await _set_status(api, ok, "SUCCESS")
    # 01-02: raw_events materialized, then its summary failed (in the same run).
    half = await _materialize(api, [["raw_events"], ["daily_summary"]], "2026-01-02")
    await api.agent(EVENTS, items=[_materialized(half, 1, ["raw_events"], "2026-01-02")])
    await _set_status(api, half, "FAILURE")
    # 01-01 again, summary only: still going (raw_events' newest run stays the first one).
    going = await _materialize(api, [["daily_summary"]], "2026-01-01")
    await _set_status(api, going, "STARTED")
    # 01-03: a run of raw_events alone failed; daily_summary was not its target.
    failed = await _materialize(api, [["raw_events"]], "2026-01-03")
    await _set_status(api, failed, "FAILURE")

    def states(data: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
        rows = data["assetNode"]["partitionStatuses"]["partitions"]
        return {r["partitionKey"]: (r["status"], r["runId"]) for r in rows}

    raw = await api.user(STATUSES, key=["raw_events"])
    assert raw["assetNode"]["partitionStatuses"]["counts"] == {
        "total": 9,
        "materialized": 2,
        "missing": 6,
        "failed": 1,
        "inProgress": 0,
    }
    got = states(raw)
    assert got["2026-01-01"] == ("MATERIALIZED", ok)
    assert got["2026-01-02"] == ("MATERIALIZED", half)
    assert got["2026-01-03"] == ("FAILED", failed)
    assert got["2026-01-04"] == ("MISSING", None)
    summary = states(await api.user(STATUSES, key=["daily_summary"]))
    assert summary["2026-01-01"] == ("IN_PROGRESS", going)
    assert summary["2026-01-02"] == ("FAILED", half)
    assert summary["2026-01-03"] == ("MISSING", None)
    page = await api.user(STATUSES, key=["raw_events"], limit=2, offset=1)
    assert list(states(page)) == ["2026-01-02", "2026-01-03"]
    assert page["assetNode"]["partitionStatuses"]["counts"]["total"] == 9
    one = await api.user(ONE_STATUS, key=["daily_summary"], partition="2026-01-02")
    assert one["assetNode"]["partitionStatus"] == {"status": "FAILED", "runId": half}
    body = await api.post(ONE_STATUS, token=api.admin_token, key=["raw_events"], partition="x")
    assert "'x' is not a partition of raw_events" in str(body["errors"])
    plain = await api.user(STATUSES, key=["plain"])
    assert plain["assetNode"]["partitionStatuses"] is None


async def _answer_configs(api: Api, defs: Definitions) -> list[str]:
    """Act as the agent: answer partition-config questions with the SDK's real answers."""
    items: list[WorkItem] = [i for i in await api.claim() if i.kind == "get_partition_config"]
    for item in items:
        set_name, key = item.payload["partition_set_name"], item.payload["partition_key"]
        run = defs.partition_run(set_name, key)
        result = PartitionRunConfigResult(
            partition_set_name=set_name, partition_key=key, run_config=run.run_config, tags=run.tags
        )
        await api.submit(
            WorkResult(
                id=item.id,
                work_item_id=item.id,
                kind=item.kind,
                ok=True,
                payload=result.model_dump(mode="json"),
            )
        )
    return sorted(i.payload["partition_key"] for i in items)


async def test_an_asset_backfill_runs_the_asset_job_narrowed_to_its_assets(api: Api) -> None:
    defs = backfill_defs()
    await api.load(defs.location_snapshot("loc"))
    launched = (
        await api.user(
            LAUNCH,
            loc="loc",
            assets=[["daily_summary"], ["raw_events"]],
            **{"from": "2026-01-02", "to": "2026-01-04"},
        )
    )["launchBackfill"]
    assert launched["partitionKeys"] == ["2026-01-02", "2026-01-03", "2026-01-04"]
    assert launched["assetSelection"] == [{"path": ["daily_summary"]}, {"path": ["raw_events"]}]
    # The implicit asset job of their definition (also in events_job, which is not chosen).
    job = launched["jobName"]
    assert job.startswith("__asset_job_") and launched["partitionSetName"] == f"{job}_partition_set"
    daemon = BackfillDaemon(api.cp.db, api.cp.queue, max_in_flight=2)
    await daemon.check()
    assert await _answer_configs(api, defs) == ["2026-01-02", "2026-01-03"]
    await daemon.check()
    backfill = (await api.user(BACKFILL, id=launched["id"]))["backfill"]
    assert backfill["assetSelection"] == launched["assetSelection"]
    runs = {p["partitionKey"]: p["runId"] for p in backfill["partitions"]}
    first = await api.run(runs["2026-01-02"])
    assert first["jobName"] == job
    tags = first["tags"]
    assert tags["tether/asset_selection"] == "daily_summary,raw_events"
    assert tags["tether/partition"] == "2026-01-02" and tags["team"] == "data"
    assert tags["tether/backfill"] == launched["id"]
    assert tags["tether/partition/start"] == "2026-01-02T00:00:00+00:00"
    # Its partitions are in progress for both assets.
    summary = await api.user(ONE_STATUS, key=["daily_summary"], partition="2026-01-03")
    assert summary["assetNode"]["partitionStatus"]["status"] == "IN_PROGRESS"
    await _set_status(api, runs["2026-01-02"], "SUCCESS")
    await _set_status(api, runs["2026-01-03"], "FAILURE")
    await daemon.check()
    assert await _answer_configs(api, defs) == ["2026-01-04"]
    await daemon.check()
    backfill = (await api.user(BACKFILL, id=launched["id"]))["backfill"]
    assert backfill["status"] == "COMPLETED" and backfill["runsLaunched"] == 3
    last = {p["partitionKey"]: p["runId"] for p in backfill["partitions"]}["2026-01-04"]
    await _set_status(api, last, "SUCCESS")
    assert (await api.user(BACKFILL, id=launched["id"]))["backfill"]["retryablePartitionKeys"] == [
        "2026-01-03"
    ]
    # A retry re-runs the failed partition, narrowed to the same assets.
    assert (await api.user(RETRY, id=launched["id"]))["retryBackfill"]["status"] == "REQUESTED"
    await daemon.check()
    assert await _answer_configs(api, defs) == ["2026-01-03"]
    await daemon.check()
    backfill = (await api.user(BACKFILL, id=launched["id"]))["backfill"]
    again = {p["partitionKey"]: p for p in backfill["partitions"]}["2026-01-03"]
    assert again["attempts"] == 2 and again["runStatus"] == "QUEUED"
    rerun = await api.run(again["runId"])
    assert rerun["tags"]["tether/asset_selection"] == "daily_summary,raw_events"


async def test_an_asset_backfill_can_be_canceled_and_given_keys(api: Api) -> None:
    defs = backfill_defs()
    await api.load(defs.location_snapshot("loc"))
    launched = (await api.user(LAUNCH, loc="loc", assets=[["regional"]], keys=["us", "eu"]))[
        "launchBackfill"
    ]
    assert launched["partitionKeys"] == ["eu", "us"]  # in partition order
    daemon = BackfillDaemon(api.cp.db, api.cp.queue, max_in_flight=1)
    await daemon.check()
    assert await _answer_configs(api, defs) == ["eu"]
    await daemon.check()
    assert (await api.user(CANCEL, id=launched["id"]))["cancelBackfill"]["status"] == "CANCELED"
    await daemon.check()
    assert await _answer_configs(api, defs) == []
    backfill = (await api.user(BACKFILL, id=launched["id"]))["backfill"]
    assert [(p["partitionKey"], p["runStatus"]) for p in backfill["partitions"]] == [
        ("eu", "CANCELED"),
        ("us", None),
    ]


async def test_an_asset_backfill_refuses_selections_that_do_not_fit(api: Api) -> None:
    await api.load(backfill_defs().location_snapshot("loc"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"assets": [["raw_events"], ["regional"]]}, "do not share one partitions definition"),
        ({"assets": [["raw_events"], ["plain"]]}, "not partitioned: plain"),
        ({"assets": [["nope"]]}, "does not compute asset 'nope'"),
        ({"assets": [["vendor", "feed"]]}, "does not compute asset 'vendor/feed'"),
        ({"assets": []}, "assetSelection is empty"),
        ({"assets": [["raw_events"]], "job": "events_job"}, "a jobName or an assetSelection"),
        ({}, "a jobName or an assetSelection"),
        ({"assets": [["raw_events"]], "keys": ["2027-01-01"]}, "unknown partition key(s)"),
        ({"assets": [["raw_events"]], "from": "2026-13-01"}, "unknown partition key '2026-13-01'"),
        ({"assets": [["raw_events"]], "keys": ["2026-01-01"], "to": "x"}, "not both"),
        ({"assets": [["raw_events"]], "loc": "other"}, "'other' does not compute"),
    ]
    for variables, expected in cases:
        body = await api.post(LAUNCH, token=api.admin_token, **{"loc": "loc", **variables})
        assert expected in str(body.get("errors")), (variables, body)
    listed = await api.user("{ backfills { id } }")
    assert listed["backfills"] == []  # nothing was created

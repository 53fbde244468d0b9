"""Assets in the control plane, through the real agent and user API on both databases: the
graph from a location's snapshot (built by the real SDK), materialization records from
the worker's events, history, staleness, materializing a selection, and wiping records."""

from __future__ import annotations

import time
from typing import Any

from controlplane_testkit import EVENTS, Api
from tether.sdk import AssetSpec, Definitions, StaticPartitionsDefinition, asset
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.snapshots import LocationSnapshot

NODES = """
query($loc: String, $group: String) {
  assetNodes(locationName: $loc, groupName: $group) {
    assetKey { path } groupName locationName repositoryName jobNames opName isExternal
    dependencyKeys { path } dependedByKeys { path } codeVersion owners partitionKeys
    latestMaterialization { runId partition metadata codeVersion timestamp }
    stale staleReasons
  }
}"""
NODE = """
query($key: [String!]!, $partition: String) {
  assetNode(assetKey: $key) {
    assetKey { path }
    materializations(limit: 10, partitionKey: $partition) { runId partition metadata }
    materializedPartitions
    latestMaterialization { runId }
    stale staleReasons
  }
}"""
MATERIALIZE = """
mutation($loc: String!, $keys: [[String!]!]!, $partition: String) {
  materializeAssets(locationName: $loc, assetKeys: $keys, partitionKey: $partition) {
    __typename
    ... on LaunchRunSuccess { run { id jobName tags } }
    ... on JobNotFoundError { message }
  }
}"""
WIPE = "mutation($keys: [[String!]!]!) { wipeAssets(assetKeys: $keys) }"


def snapshot(version: str = "1") -> LocationSnapshot:
    @asset(group_name="raw", owners=["team:data"])
    def orders() -> list[int]:
        return [1]

    @asset(code_version=version, deps=[AssetSpec("vendor/feed")])
    def cleaned(orders: list[int]) -> list[int]:
        return orders

    @asset(partitions_def=StaticPartitionsDefinition(["eu", "us"]))
    def regional() -> None: ...

    defs = Definitions(assets=[orders, cleaned, regional, AssetSpec("vendor/feed")])
    return defs.location_snapshot("loc")


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


async def nodes(api: Api, **variables: Any) -> dict[str, dict[str, Any]]:
    data = await api.user(NODES, **variables)
    return {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}


async def test_the_graph_comes_from_the_snapshot_with_downstream_keys(api: Api) -> None:
    await api.load(snapshot())
    graph = await nodes(api)
    assert set(graph) == {"orders", "cleaned", "regional", "vendor/feed"}
    cleaned = graph["cleaned"]
    assert cleaned["dependencyKeys"] == [{"path": ["orders"]}, {"path": ["vendor", "feed"]}]
    assert cleaned["jobNames"] == ["__asset_job"] and cleaned["opName"] == "cleaned"
    assert cleaned["locationName"] == "loc" and cleaned["codeVersion"] == "1"
    assert graph["orders"]["dependedByKeys"] == [{"path": ["cleaned"]}]
    assert graph["vendor/feed"]["isExternal"] and graph["vendor/feed"]["opName"] is None
    assert graph["vendor/feed"]["dependedByKeys"] == [{"path": ["cleaned"]}]
    assert graph["orders"]["owners"] == ["team:data"]
    assert graph["regional"]["partitionKeys"] == ["eu", "us"]
    assert all(n["latestMaterialization"] is None and not n["stale"] for n in graph.values())
    assert set(await nodes(api, group="raw")) == {"orders"}
    assert await nodes(api, loc="elsewhere") == {}


async def test_materializations_are_recorded_once_with_history_and_staleness(api: Api) -> None:
    await api.load(snapshot())
    run_id = str((await api.launch(job="__asset_job"))["run"]["id"])
    t0 = time.time()
    events = [
        materialized(run_id, 1, ["orders"], at=t0, metadata={"rows": 3}),
        materialized(run_id, 2, ["cleaned"], at=t0 + 1, code_version="1"),
        materialized(run_id, 3, ["regional"], at=t0 + 2, partition="eu"),
    ]
    assert (await api.agent(EVENTS, items=events))["storeEvents"]["stored"] == 3
    # A re-upload stores nothing twice.
    assert (await api.agent(EVENTS, items=events))["storeEvents"]["duplicates"] == 3
    graph = await nodes(api)
    latest = graph["orders"]["latestMaterialization"]
    assert latest["runId"] == run_id and latest["metadata"] == {"rows": 3}
    assert not graph["cleaned"]["stale"]
    node = (await api.user(NODE, key=["regional"], partition="eu"))["assetNode"]
    assert [m["partition"] for m in node["materializations"]] == ["eu"]
    assert node["materializedPartitions"] == ["eu"]
    # orders materialized again, later: cleaned is stale, and says why.
    later = [materialized(run_id, 4, ["orders"], at=t0 + 5)]
    await api.agent(EVENTS, items=later)
    stale = (await api.user(NODE, key=["cleaned"]))["assetNode"]
    assert stale["stale"] and stale["staleReasons"] == ["upstream orders was materialized since"]
    history = (await api.user(NODE, key=["orders"]))["assetNode"]["materializations"]
    assert len(history) == 2  # newest first
    wiped = await api.user(WIPE, keys=[["orders"], ["cleaned"]])
    assert wiped["wipeAssets"] == 3
    graph = await nodes(api)
    assert graph["orders"]["latestMaterialization"] is None
    assert graph["regional"]["latestMaterialization"] is not None


async def test_a_materialization_naming_no_asset_is_an_event_only(api: Api) -> None:
    await api.load(snapshot())
    run_id = str((await api.launch(job="__asset_job"))["run"]["id"])
    bad = materialized(run_id, 1, ["orders"])
    bad["data"]["asset_key"] = "not a path"
    done = await api.agent(EVENTS, items=[bad])
    assert done["storeEvents"]["stored"] == 1
    assert (await nodes(api))["orders"]["latestMaterialization"] is None


async def test_materialize_assets_launches_the_asset_job_narrowed_to_them(api: Api) -> None:
    await api.load(snapshot())
    launched = (await api.user(MATERIALIZE, loc="loc", keys=[["cleaned"], ["orders"]]))[
        "materializeAssets"
    ]
    assert launched["__typename"] == "LaunchRunSuccess"
    run = launched["run"]
    assert run["jobName"] == "__asset_job"
    assert run["tags"]["tether/asset_selection"] == "cleaned,orders"
    part = (await api.user(MATERIALIZE, loc="loc", keys=[["regional"]], partition="us"))[
        "materializeAssets"
    ]
    assert part["run"]["tags"]["tether/partition"] == "us"
    body = await api.post(
        MATERIALIZE, token=api.admin_token, loc="loc", keys=[["regional"]], partition="asia"
    )
    assert "not a partition" in str(body["errors"])
    for keys, expected in (
        ([["vendor", "feed"]], "does not compute asset 'vendor/feed'"),
        ([["nope"]], "does not compute asset 'nope'"),
    ):
        refused = (await api.user(MATERIALIZE, loc="loc", keys=keys))["materializeAssets"]
        assert refused["__typename"] == "JobNotFoundError" and expected in refused["message"]
    body = await api.post(NODE, token=api.admin_token, key=[])
    assert "non-empty path" in str(body["errors"])

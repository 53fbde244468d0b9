"""Run-less materialization reports (``reportAssetMaterialization``) through the real user
API on both databases: an external asset's report is its latest materialization and in its
history (with no run), a reportId makes a retry idempotent, partitions and metadata are
checked, viewers are refused, and wiping forgets reports too."""

from __future__ import annotations

import time
from typing import Any

from controlplane_testkit import EVENTS, Api
from sqlalchemy import func, select
from tether.controlplane.db.models import AssetMaterializationRow
from tether.controlplane.security import auth
from tether.sdk import AssetSpec, Definitions, StaticPartitionsDefinition, asset
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.snapshots import LocationSnapshot

REPORT = """
mutation($key: [String!]!, $partition: String, $metadata: JSON, $description: String,
         $reportId: String) {
  reportAssetMaterialization(assetKey: $key, partitionKey: $partition, metadata: $metadata,
                             description: $description, reportId: $reportId) {
    assetKey { path } runId reportId stepKey timestamp partition description metadata
    codeVersion upstream { runId }
  }
}"""
NODE = """
query($key: [String!]!) {
  assetNode(assetKey: $key) {
    latestMaterialization { runId reportId partition metadata description timestamp }
    materializations(limit: 10) { runId reportId partition metadata }
    materializedPartitions
    partitionStatuses { counts { materialized missing } partitions { partitionKey status runId } }
    stale staleReasons
  }
}"""
WIPE = "mutation($keys: [[String!]!]!) { wipeAssets(assetKeys: $keys) }"


def snapshot() -> LocationSnapshot:
    @asset(deps=[AssetSpec("vendor/feed")])
    def cleaned() -> int:
        return 1

    regions = StaticPartitionsDefinition(["eu", "us"])
    defs = Definitions(
        assets=[
            cleaned,
            AssetSpec("vendor/feed"),
            AssetSpec("vendor/regional", partitions_def=regions),
        ]
    )
    return defs.location_snapshot("loc")


async def report(api: Api, **variables: Any) -> dict[str, Any]:
    return (await api.user(REPORT, **variables))["reportAssetMaterialization"]


async def refused(api: Api, token: str | None = None, **variables: Any) -> tuple[str, str]:
    body = await api.post(REPORT, token=token or api.admin_token, **variables)
    assert body.get("errors"), body
    error = body["errors"][0]
    return str(error["extensions"]["code"]), str(error["message"])


async def count(api: Api) -> int:
    async with api.cp.db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(AssetMaterializationRow)))


async def test_a_report_is_the_external_assets_latest_materialization(api: Api) -> None:
    await api.load(snapshot())
    before = time.time()
    recorded = await report(
        api, key=["vendor", "feed"], metadata={"rows": 7, "source": "s3"}, description="nightly"
    )
    assert recorded["assetKey"] == {"path": ["vendor", "feed"]}
    assert recorded["runId"] is None and recorded["reportId"] is None
    assert recorded["stepKey"] is None and recorded["codeVersion"] is None
    assert recorded["upstream"] == [] and recorded["partition"] is None
    assert recorded["metadata"] == {"rows": 7, "source": "s3"}
    assert before <= recorded["timestamp"] <= time.time()
    node = (await api.user(NODE, key=["vendor", "feed"]))["assetNode"]
    latest = node["latestMaterialization"]
    assert latest["runId"] is None and latest["description"] == "nightly"
    assert latest["metadata"] == {"rows": 7, "source": "s3"}
    assert node["materializations"] == [
        {
            "runId": None,
            "reportId": None,
            "partition": None,
            "metadata": {"rows": 7, "source": "s3"},
        }
    ]
    # A second report (no id) is a second materialization, newest first.
    await report(api, key=["vendor", "feed"], metadata={"rows": 8})
    history = (await api.user(NODE, key=["vendor", "feed"]))["assetNode"]["materializations"]
    assert [m["metadata"]["rows"] for m in history] == [8, 7]


async def test_a_report_after_the_downstream_run_makes_it_stale(api: Api) -> None:
    await api.load(snapshot())
    run_id = str((await api.launch(job="__asset_job"))["run"]["id"])
    event = RunEvent(
        run_id=run_id,
        seq=1,
        event_type=EventType.ASSET_MATERIALIZATION,
        timestamp=time.time() - 60,
        step_key="cleaned",
        data={"asset_key": ["cleaned"], "metadata": {}},
    )
    await api.agent(EVENTS, items=[event.model_dump(mode="json")])
    assert not (await api.user(NODE, key=["cleaned"]))["assetNode"]["stale"]
    await report(api, key=["vendor", "feed"])
    cleaned = (await api.user(NODE, key=["cleaned"]))["assetNode"]
    assert cleaned["staleReasons"] == ["upstream vendor/feed was materialized since"]
    # A computed asset may be reported too; the run's record stays in its history.
    await report(api, key=["cleaned"], reportId="manual-fix")
    history = (await api.user(NODE, key=["cleaned"]))["assetNode"]["materializations"]
    assert [m["runId"] for m in history] == [None, run_id]


async def test_a_report_id_makes_a_retry_idempotent(api: Api) -> None:
    await api.load(snapshot())
    first = await report(
        api, key=["vendor", "feed"], reportId="load:2026-12-02.v1", metadata={"n": 1}
    )
    again = await report(
        api, key=["vendor", "feed"], reportId="load:2026-12-02.v1", metadata={"n": 2}
    )
    assert first == again and first["reportId"] == "load:2026-12-02.v1"
    assert await count(api) == 1
    code, message = await refused(
        api, key=["vendor", "regional"], partition="eu", reportId="load:2026-12-02.v1"
    )
    assert code == "BAD_INPUT" and "already used for a report of asset 'vendor/feed'" in message
    for bad in ("", "has space", "x" * 65, "semi;colon"):
        code, message = await refused(api, key=["vendor", "feed"], reportId=bad)
        assert code == "BAD_INPUT" and "reportId must be 1 to 64 characters" in message
    assert await count(api) == 1


async def test_a_partitioned_asset_needs_one_of_its_partitions(api: Api) -> None:
    await api.load(snapshot())
    code, message = await refused(api, key=["vendor", "regional"])
    assert code == "BAD_INPUT" and "is partitioned: give partitionKey" in message
    code, message = await refused(api, key=["vendor", "regional"], partition="asia")
    assert code == "BAD_INPUT" and "'asia' is not a partition of asset 'vendor/regional'" in message
    code, message = await refused(api, key=["vendor", "feed"], partition="eu")
    assert code == "BAD_INPUT" and "is not partitioned" in message
    recorded = await report(api, key=["vendor", "regional"], partition="eu")
    assert recorded["partition"] == "eu"
    node = (await api.user(NODE, key=["vendor", "regional"]))["assetNode"]
    assert node["materializedPartitions"] == ["eu"]
    statuses = node["partitionStatuses"]
    assert statuses["counts"] == {"materialized": 1, "missing": 1}
    assert statuses["partitions"][0] == {
        "partitionKey": "eu",
        "status": "MATERIALIZED",
        "runId": None,
    }


async def test_bad_reports_are_refused_with_a_clear_error(api: Api) -> None:
    await api.load(snapshot())
    code, message = await refused(api, key=["nope"])
    assert code == "NOT_FOUND" and "no loaded location defines asset 'nope'" in message
    code, message = await refused(api, key=[])
    assert code == "BAD_INPUT" and "non-empty path" in message
    for metadata, expected in (
        ([1, 2], "metadata must be a JSON object"),
        ("text", "metadata must be a JSON object"),
        ({"big": "x" * 70_000}, "a report's is at most 65536"),
        ({"": 1}, "metadata keys are strings of 1 to 200"),
        ({"k" * 201: 1}, "metadata keys are strings of 1 to 200"),
    ):
        code, message = await refused(api, key=["vendor", "feed"], metadata=metadata)
        assert code == "BAD_INPUT" and expected in message, (metadata, message)
    deep: Any = 1
    for _ in range(40):
        deep = {"d": deep}
    code, message = await refused(api, key=["vendor", "feed"], metadata=deep)
    assert code == "BAD_INPUT" and "nested deeper than 32" in message
    code, message = await refused(api, key=["vendor", "feed"], description="d" * 10_001)
    assert code == "BAD_INPUT" and "at most 10000 are recorded" in message
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="view", role=auth.Role.VIEWER)
        editor = await auth.create_token(session, name="edit", role=auth.Role.EDITOR)
    code, _ = await refused(api, token=viewer, key=["vendor", "feed"])
    assert code == "FORBIDDEN"
    assert await count(api) == 0
    body = await api.post(REPORT, token=editor, key=["vendor", "feed"])
    assert not body.get("errors") and await count(api) == 1


async def test_wiping_forgets_reports(api: Api) -> None:
    await api.load(snapshot())
    await report(api, key=["vendor", "feed"], reportId="r1")
    await report(api, key=["vendor", "regional"], partition="us")
    assert (await api.user(WIPE, keys=[["vendor", "feed"], ["vendor", "regional"]]))[
        "wipeAssets"
    ] == 2
    assert (await api.user(NODE, key=["vendor", "feed"]))["assetNode"][
        "latestMaterialization"
    ] is None
    # The id is free again once its record is forgotten.
    assert (await report(api, key=["vendor", "feed"], reportId="r1"))["reportId"] == "r1"

"""GraphQL of schedules, sensors, partitions and backfills, against the real app."""

from __future__ import annotations

import asyncio
import time

from controlplane_testkit import Api, snapshot_with_instigators
from tether.controlplane.daemons import SensorDaemon
from tether.shared.wire.work import PartitionKeysResult, SensorTickResult, WorkResult

SCHEDULES = """
query($loc: String) {
  schedules(locationName: $loc) {
    name repositoryName cronSchedule executionTimezone jobNames status defaultStatus
    nextTickTimestamp ticks { tickTime status runIds skipReason error { clsName message } }
  }
}"""
SENSORS = """
query { sensors { name status minimumIntervalSeconds cursor nextTickTimestamp
                  ticks { status runIds runKeys cursor skipReason } } }"""
SET_SCHEDULE = """
mutation($name: String!) {
  start: startSchedule(locationName: "loc", name: $name) { name status nextTickTimestamp }
}"""
STOP_SCHEDULE = """
mutation($name: String!) { stopSchedule(locationName: "loc", name: $name) { name status } }"""
STOP_SENSOR = """
mutation($name: String!) { stopSensor(locationName: "loc", name: $name) { name status } }"""
KEYS = """
query($t: Float!) { partitionKeys(locationName: "loc", jobName: "hello", timeoutSeconds: $t)
  { partitionSetName keys } }"""
BACKFILL = """
mutation($keys: [String!], $from: String, $to: String) {
  launchBackfill(locationName: "loc", jobName: "hello", partitionKeys: $keys, fromKey: $from,
                 toKey: $to, tags: {who: "api"}) {
    id status partitionKeys tags partitions { partitionKey runId runStatus }
  }
}"""
BACKFILLS = "query { backfills { id status launched partitions { partitionKey runStatus } } }"


async def _answer_keys(api: Api) -> None:
    """Act as the agent: answer the next get_partition_keys question."""
    async with asyncio.timeout(20):  # safety net against a hang only
        while True:
            items = [i for i in await api.claim(wait_ms=200) if i.kind == "get_partition_keys"]
            if items:
                break
    (item,) = items
    result = PartitionKeysResult(
        partition_set_name=item.payload["partition_set_name"], partition_keys=["a", "b", "c"]
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


async def test_schedules_and_sensors_list_start_stop_and_show_ticks(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    schedules = {s["name"]: s for s in (await api.user(SCHEDULES, loc="loc"))["schedules"]}
    assert schedules["hourly"]["status"] == "RUNNING" and schedules["off"]["status"] == "STOPPED"
    assert schedules["hourly"]["nextTickTimestamp"] % 3600 == 0
    assert schedules["hourly"]["nextTickTimestamp"] > time.time()
    assert schedules["off"]["nextTickTimestamp"] is None
    assert schedules["hourly"]["repositoryName"] == "repo"
    assert (await api.user(SCHEDULES, loc="elsewhere"))["schedules"] == []

    started = (await api.user(SET_SCHEDULE, name="off"))["start"]
    assert started["status"] == "RUNNING" and started["nextTickTimestamp"] % 60 == 0
    stopped = (await api.user(STOP_SCHEDULE, name="hourly"))["stopSchedule"]
    assert stopped["status"] == "STOPPED"
    missing = await api.post(STOP_SCHEDULE, token=api.admin_token, name="nope")
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    # A sensor tick shows up with its outcome and the cursor it stored.
    await api.user(STOP_SENSOR, name="slow")
    sensors = SensorDaemon(api.cp.db, api.cp.queue)
    await sensors.check()
    (item,) = [i for i in await api.claim() if i.kind == "evaluate_sensor"]
    tick = SensorTickResult(sensor_name="watcher", skip_reason="nothing new", cursor="c1")
    await api.submit(
        WorkResult(
            id=item.id,
            work_item_id=item.id,
            kind=item.kind,
            ok=True,
            payload=tick.model_dump(mode="json"),
        )
    )
    await sensors.check()
    by_name = {s["name"]: s for s in (await api.user(SENSORS))["sensors"]}
    watcher = by_name["watcher"]
    assert watcher["status"] == "RUNNING" and watcher["cursor"] == "c1"
    assert watcher["ticks"] == [
        {
            "status": "SKIPPED",
            "runIds": [],
            "runKeys": [],
            "cursor": "c1",
            "skipReason": "nothing new",
        }
    ]
    assert by_name["slow"]["status"] == "STOPPED" and by_name["slow"]["ticks"] == []


async def test_partition_keys_and_backfills(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    query = "{ codeLocations { name repositories { jobs { name partitionSetName } } } }"
    locations = (await api.user(query))["codeLocations"]
    (repo,) = next(loc for loc in locations if loc["name"] == "loc")["repositories"]
    assert {"name": "hello", "partitionSetName": "hello_partitions"} in repo["jobs"]
    asked = asyncio.create_task(api.user(KEYS, t=10.0))
    await _answer_keys(api)
    keys = (await asked)["partitionKeys"]
    assert keys == {"partitionSetName": "hello_partitions", "keys": ["a", "b", "c"]}

    # Nobody answers: a clear error, not a hang.
    late = await api.post(KEYS, token=api.admin_token, t=0.3)
    assert late["errors"][0]["extensions"]["code"] == "AGENT_TIMEOUT"
    await api.claim()  # (the expired question is not offered any more)

    asked = asyncio.create_task(api.user(BACKFILL, keys=None, **{"from": "b", "to": None}))
    await _answer_keys(api)
    backfill = (await asked)["launchBackfill"]
    assert backfill["status"] == "REQUESTED" and backfill["partitionKeys"] == ["b", "c"]
    assert backfill["tags"] == {"who": "api"}
    assert backfill["partitions"] == [
        {"partitionKey": "b", "runId": None, "runStatus": None},
        {"partitionKey": "c", "runId": None, "runStatus": None},
    ]
    (listed,) = (await api.user(BACKFILLS))["backfills"]
    assert listed["id"] == backfill["id"] and listed["launched"] == 0

    asked = asyncio.create_task(api.post(BACKFILL, token=api.admin_token, keys=["a", "zz"]))
    await _answer_keys(api)
    bad = await asked
    assert "unknown partition key(s): zz" in bad["errors"][0]["message"]

"""The web UI's schedules, sensors, partitions and backfills pages, over the real ASGI app.

Definitions are loaded and toggled through the real API; ticks come from the real sensor
daemon answered as an agent would (as test_instigation_api.py does).
"""

from __future__ import annotations

import asyncio
import re

import pytest
from controlplane_testkit import Api, snapshot_with_instigators
from tether.controlplane.daemons import BackfillDaemon, SensorDaemon
from tether.controlplane.security import auth
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.work import (
    PartitionKeysResult,
    PartitionRunConfigResult,
    RunRequestInfo,
    SensorTickResult,
    WorkResult,
)

STOP_SENSOR = """
mutation($name: String!) { stopSensor(locationName: "loc", name: $name) { name status } }"""


@pytest.fixture
def backend() -> str:
    # Pages read through the same API on either database; SQLite keeps these tests fast.
    return "sqlite"


@pytest.fixture
async def admin_token(api: Api) -> str:
    """An admin API token of the default deployment."""
    async with api.cp.db.transaction() as session:
        return await auth.create_token(session, name="ui-tests", role=auth.Role.ADMIN)


@pytest.fixture(autouse=True)
def _signed_in(api: Api, admin_token: str) -> None:
    # Pages act as their request's sender: here an admin, like a signed-in user.
    api.client.headers["Authorization"] = f"Bearer {admin_token}"


async def sensor_tick(api: Api, sensors: SensorDaemon, result: WorkResult | None, **kw) -> None:
    """One tick of the running sensors, answered as an agent with ``kw`` (or ``result``)."""
    await sensors.check()
    (item,) = [i for i in await api.claim() if i.kind == "evaluate_sensor"]
    if result is None:
        tick = SensorTickResult(sensor_name=item.payload["sensor_name"], **kw)
        result = WorkResult(
            id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=tick.model_dump()
        )
    await api.submit(result.model_copy(update={"id": item.id, "work_item_id": item.id}))
    await sensors.check()


async def test_schedules_page_shows_status_next_tick_cursor_and_ticks(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    await api.user(STOP_SENSOR, name="slow")
    sensors = SensorDaemon(api.cp.db, api.cp.queue)
    await sensor_tick(
        api,
        sensors,
        None,
        cursor="c1",
        run_requests=[RunRequestInfo(job_name="hello", run_key="file-1")],
    )
    page = await api.client.get("/schedules")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'class="active">Schedules &amp; sensors' in html
    hourly = html.split('data-schedule="hourly"')[1].split("</section>")[0]
    assert 'data-schedule="hourly" data-status="RUNNING"' in html
    assert "0 * * * *" in hourly and "default: running" in hourly and "UTC</span>" in hourly
    assert "No tick yet." in hourly and "Turn off" in hourly
    off = html.split('data-schedule="off"')[1].split("</section>")[0]
    assert "next tick: —" in off and "Turn on" in off
    watcher = html.split('data-sensor="watcher"')[1].split("</section>")[0]
    assert 'cursor: <span class="mono">c1</span>' in watcher
    (run_id,) = re.findall(r'href="/runs/([^"]+)"', watcher)
    assert "run keys: file-1" in watcher and "badge status-success" in watcher
    assert (await api.run(run_id))["jobName"] == "hello"


async def test_toggles_turn_schedules_and_sensors_on_and_off(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    resp = await api.client.post(
        "/locations/loc/schedules/hourly/stop", data={"repo": "repo", "back": "/locations/loc"}
    )
    assert (resp.status_code, resp.headers["location"]) == (303, "/locations/loc")
    resp = await api.client.post("/locations/loc/sensors/slow/stop", data={"back": "//evil"})
    # Never redirected off the UI.
    assert resp.headers["location"] == "/schedules?location=loc"
    await api.client.post("/locations/loc/schedules/off/start", data={})
    page = (await api.client.get("/locations/loc")).text
    assert 'data-schedule="hourly" data-status="STOPPED"' in page
    assert 'data-schedule="off" data-status="RUNNING"' in page
    assert 'data-sensor="slow" data-status="STOPPED"' in page
    missing = await api.client.post("/locations/loc/schedules/nope/start", data={})
    assert missing.status_code == 404 and "no schedule named" in missing.text
    bogus = await api.client.post("/locations/loc/schedules/hourly/explode", data={})
    assert bogus.status_code == 404


async def test_failing_sensor_shows_its_error_on_the_overview_and_its_page(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    await api.user(STOP_SENSOR, name="slow")
    assert "No schedule or sensor failed its last tick." in (await api.client.get("/")).text
    boom = ErrorInfo(cls_name="KeyError", message="'bucket'", traceback="Traceback: sensor.py")
    failed = WorkResult(id="x", work_item_id="x", kind="evaluate_sensor", ok=False, error=boom)
    await sensor_tick(api, SensorDaemon(api.cp.db, api.cp.queue), failed)
    overview = (await api.client.get("/")).text
    row = overview.split('data-failing="watcher"')[1].split("</tr>")[0]
    assert "sensor" in row and "KeyError: &#39;bucket&#39;" in row
    page = (await api.client.get("/schedules?location=loc")).text
    watcher = page.split('data-sensor="watcher"')[1].split("</section>")[0]
    assert "badge status-failure" in watcher
    assert "<summary>Traceback</summary>" in watcher and "Traceback: sensor.py" in watcher


async def test_a_viewer_sees_schedules_without_toggles(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="ui-viewer", role=auth.Role.VIEWER)
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    del api.client.headers["Authorization"]
    page = await api.client.get("/schedules", headers=as_viewer)
    assert page.status_code == 200 and 'data-schedule="hourly"' in page.text
    assert "Turn off" not in page.text and "may not turn schedules" in page.text
    refused = await api.client.post(
        "/locations/loc/schedules/hourly/stop", data={}, headers=as_viewer
    )
    assert refused.status_code == 403 and "Traceback" not in refused.text
    # The picker shows a viewer the keys but no launch forms.
    asked = asyncio.create_task(
        api.client.get("/locations/loc/jobs/hello/partitions", headers=as_viewer)
    )
    await answer_keys(api, ["a", "b"])
    picker = (await asked).text
    assert "may not launch partitions" in picker and "<form" not in picker


async def test_no_schedules_is_an_empty_state(api: Api) -> None:
    await api.load()
    html = (await api.client.get("/schedules")).text
    assert "No schedule is defined" in html and "No sensor is defined" in html
    assert "Schedules &amp; sensors <a" not in (await api.client.get("/locations/loc")).text


async def answer_keys(api: Api, keys: list[str]) -> None:
    """Act as the agent: answer the next get_partition_keys question with ``keys``."""
    async with asyncio.timeout(20):  # safety net against a hang only
        while True:
            items = [i for i in await api.claim(wait_ms=200) if i.kind == "get_partition_keys"]
            if items:
                break
    (item,) = items
    result = PartitionKeysResult(
        partition_set_name=item.payload["partition_set_name"], partition_keys=keys
    )
    await api.submit(
        WorkResult(
            id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=result.model_dump()
        )
    )


async def test_partition_picker_lists_keys_and_handles_a_silent_agent(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    job = (await api.client.get("/locations/loc/jobs/hello")).text
    assert 'hx-get="/locations/loc/jobs/hello/partitions?repo=repo" hx-trigger="load"' in job
    url = "/locations/loc/jobs/hello/partitions?repo=repo"
    asked = asyncio.create_task(api.client.get(url, headers={"HX-Request": "true"}))
    await answer_keys(api, ["2026-01", "2026-02", "2026-03"])
    picker = (await asked).text
    assert 'data-partitioned="true"' in picker and "hello_partitions · 3 keys" in picker
    assert picker.count('<option value="2026-02"') == 3  # one key, from and to
    assert 'name="mode" value="one"' in picker and "Launch backfill" in picker
    # Nobody answers in time: a sentence and a way to ask again, not an error stack.
    late = await api.client.get(url + "&timeout=0.2", headers={"HX-Request": "true"})
    assert late.status_code == 200 and "No agent listed this job" in late.text
    assert "Ask again" in late.text and "Traceback" not in late.text
    await api.claim()  # (the expired question is not offered any more)


async def test_an_unpartitioned_job_has_no_picker(api: Api) -> None:
    await api.load()
    picker = await api.client.get("/locations/loc/jobs/hello/partitions?repo=repo")
    assert picker.status_code == 200 and 'data-partitioned="false"' in picker.text
    assert "<select" not in picker.text


async def test_backfill_from_the_picker_shows_per_partition_runs(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    assert "No backfills yet." in (await api.client.get("/backfills")).text
    launch = asyncio.create_task(
        api.client.post(
            "/locations/loc/jobs/hello/backfill?repo=repo",
            data={"mode": "range", "from": "b", "to": "c", "tags": '{"who": "ui"}'},
        )
    )
    await answer_keys(api, ["a", "b", "c"])
    resp = await launch
    assert resp.status_code == 303, resp.text
    backfill_id = resp.headers["location"].removeprefix("/backfills/")
    page = (await api.client.get(f"/backfills/{backfill_id}")).text
    assert 'data-status="REQUESTED"' in page and "every 2s" in page
    assert '<span role="listitem" class="cell cell-none" data-partition="b"' in page
    assert 'data-partition="a"' not in page and "who=ui" in page
    # The backfill daemon asks the agent for each partition's config, then creates runs.
    daemon = BackfillDaemon(api.cp.db, api.cp.queue)
    await daemon.check()
    queries = [i for i in await api.claim() if i.kind == "get_partition_config"]
    for q in queries:
        answer = PartitionRunConfigResult(
            partition_set_name="hello_partitions", partition_key=q.payload["partition_key"]
        )
        await api.submit(
            WorkResult(
                id=q.id, work_item_id=q.id, kind=q.kind, ok=True, payload=answer.model_dump()
            )
        )
    await daemon.check()
    listing = (await api.client.get("/backfills")).text
    row = listing.split(f'data-backfill="{backfill_id}"')[1].split("</tr>")[0]
    cells = re.findall(r'class="cell cell-(\w+)" href="/runs/([^"]+)" data-partition="(\w)"', row)
    assert [(status, key) for status, _, key in cells] == [("queued", "b"), ("queued", "c")]
    assert (await api.run(cells[0][1]))["jobName"] == "hello"
    assert "2 of 2 launched" in row
    missing = await api.client.get("/backfills/nope")
    assert missing.status_code == 404 and "There is no backfill" in missing.text


async def test_one_partition_and_bad_choices(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    url = "/locations/loc/jobs/hello/backfill?repo=repo"
    bad_tags = await api.client.post(url, data={"mode": "all", "tags": "[1]"})
    assert bad_tags.status_code == 400 and "Tags must be a JSON object" in bad_tags.text
    nothing = await api.client.post(url, data={"mode": "one", "partition": ""})
    assert nothing.status_code == 400 and "Choose a partition" in nothing.text
    launch = asyncio.create_task(api.client.post(url, data={"mode": "one", "partition": "zz"}))
    await answer_keys(api, ["a", "b"])
    unknown = await launch
    assert unknown.status_code == 400 and "unknown partition key(s): zz" in unknown.text
    assert 'href="/locations/loc/jobs/hello?repo=repo#partitions">Back to job hello' in unknown.text
    launch = asyncio.create_task(api.client.post(url, data={"mode": "one", "partition": "b"}))
    await answer_keys(api, ["a", "b"])
    one = await launch
    assert one.status_code == 303
    page = (await api.client.get(one.headers["location"])).text
    assert re.findall(r'data-partition="(\w)"', page) == ["b"]

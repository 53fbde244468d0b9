"""The web UI's schedules, sensors, partitions and backfills pages, over the real ASGI app.

Definitions are loaded and toggled through the real API; ticks come from the real sensor
daemon answered as an agent would (as test_instigation_api.py does).
"""

from __future__ import annotations

import re

import pytest
from controlplane_testkit import Api, snapshot_with_instigators
from tether.controlplane import auth
from tether.controlplane.daemons import SensorDaemon
from tether.shared.messages import ErrorInfo, RunRequestInfo, SensorTickResult, WorkResult

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
    assert "(file-1)" in watcher and "badge status-success" in watcher
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
    as_viewer = {"Cookie": f"tether_token={viewer}"}
    del api.client.headers["Authorization"]
    page = await api.client.get("/schedules", headers=as_viewer)
    assert page.status_code == 200 and 'data-schedule="hourly"' in page.text
    assert "Turn off" not in page.text and "may not turn schedules" in page.text
    refused = await api.client.post(
        "/locations/loc/schedules/hourly/stop", data={}, headers=as_viewer
    )
    assert refused.status_code == 403 and "Traceback" not in refused.text


async def test_no_schedules_is_an_empty_state(api: Api) -> None:
    await api.load()
    html = (await api.client.get("/schedules")).text
    assert "No schedule is defined" in html and "No sensor is defined" in html
    assert "Schedules &amp; sensors <a" not in (await api.client.get("/locations/loc")).text

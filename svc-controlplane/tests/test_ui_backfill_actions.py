"""The web UI's backfill cancel/retry buttons and pages of backfills, and a schedule's
paged tick history with missed ticks and its catch-up policy, over the real ASGI app."""

from __future__ import annotations

import math
import re
import time

import controlplane_testkit as testkit
import pytest
from controlplane_testkit import Api, snapshot_with_instigators
from tether.controlplane.daemons import BackfillDaemon, Scheduler
from tether.controlplane.db.models import Run
from tether.controlplane.security import auth
from tether.controlplane.store.backfills import create_backfill
from tether.controlplane.ui.backfills import BACKFILLS_LIMIT
from tether.controlplane.ui.instigators import TICKS_PAGE_SIZE
from tether.shared.wire.snapshots import InstigatorStatus
from tether.shared.wire.work import PartitionRunConfigResult, WorkResult


@pytest.fixture
def backend() -> str:
    # Pages read through the same API on either database; SQLite keeps these tests fast.
    return "sqlite"


@pytest.fixture(autouse=True)
async def _signed_in(api: Api) -> None:
    api.client.headers["Authorization"] = f"Bearer {api.admin_token}"


async def _backfill(api: Api, keys: list[str], created_at: float | None = None) -> str:
    async with api.cp.db.transaction() as session:
        row = await create_backfill(
            session,
            deployment_id="default",
            location_name="loc",
            repository_name="repo",
            job_name="hello",
            partition_set_name="hello_partitions",
            partition_keys=keys,
            now=created_at if created_at is not None else time.time(),
        )
        return row.id


async def _launch_runs(api: Api, daemon: BackfillDaemon) -> None:
    await daemon.check()
    for item in [i for i in await api.claim() if i.kind == "get_partition_config"]:
        answer = PartitionRunConfigResult(
            partition_set_name="hello_partitions", partition_key=item.payload["partition_key"]
        )
        await api.submit(
            WorkResult(
                id=item.id,
                work_item_id=item.id,
                kind=item.kind,
                ok=True,
                payload=answer.model_dump(),
            )
        )
    await daemon.check()


async def test_cancel_and_retry_buttons(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    backfill_id = await _backfill(api, ["a", "b", "c"])
    daemon = BackfillDaemon(api.cp.db, api.cp.queue, max_in_flight=2)
    await _launch_runs(api, daemon)
    page = (await api.client.get(f"/backfills/{backfill_id}")).text
    assert "Cancel backfill" in page and "also terminate running runs" in page
    assert "backfill-retry" not in page  # nothing to retry while it is REQUESTED

    resp = await api.client.post(f"/backfills/{backfill_id}/cancel", data={})
    assert (resp.status_code, resp.headers["location"]) == (303, f"/backfills/{backfill_id}")
    live = (await api.client.get(f"/backfills/{backfill_id}/live")).text
    assert 'data-status="CANCELED"' in live
    # a and b were queued, so canceled; c never launched: all three can be retried.
    assert "Retry 3 failed or canceled partitions" in live and "Cancel backfill" not in live
    rows = dict(re.findall(r'data-partition-row="(\w)">.*?<td>(\d+)</td></tr>', live, re.S))
    assert rows == {"a": "1", "b": "1", "c": "0"}

    resp = await api.client.post(f"/backfills/{backfill_id}/retry", data={})
    assert resp.status_code == 303
    await _launch_runs(api, daemon)
    page = (await api.client.get(f"/backfills/{backfill_id}")).text
    assert 'data-status="REQUESTED"' in page and "retried" in page
    rows = dict(re.findall(r'data-partition-row="(\w)">.*?<td>(\d+)</td></tr>', page, re.S))
    assert rows == {"a": "2", "b": "2", "c": "0"}
    assert "(4 runs with retries)" in page

    # Refusals are pages with the API's message; viewers see no buttons.
    again = await api.client.post(f"/backfills/{backfill_id}/retry", data={})
    assert again.status_code == 400 and "still launching runs" in again.text
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="v", role=auth.Role.VIEWER)
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    shown = (await api.client.get(f"/backfills/{backfill_id}", headers=as_viewer)).text
    assert "Cancel backfill" not in shown and "<form" not in shown.split("backfill-live")[1]
    refused = await api.client.post(f"/backfills/{backfill_id}/cancel", headers=as_viewer)
    assert refused.status_code == 403


async def test_terminating_from_the_cancel_form(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    backfill_id = await _backfill(api, ["a"])
    await _launch_runs(api, BackfillDaemon(api.cp.db, api.cp.queue))
    async with api.cp.db.transaction() as session:
        (run,) = (await session.execute(Run.__table__.select())).all()
        (await session.get(Run, run.id)).status = "STARTED"  # type: ignore[union-attr]
    await api.client.post(f"/backfills/{backfill_id}/cancel", data={"terminate": "on"})
    assert (await api.run(run.id))["status"] == "CANCELING"


async def test_backfills_list_pages_and_filters(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    ids = [await _backfill(api, ["a"], created_at=1000.0 + n) for n in range(BACKFILLS_LIMIT + 1)]
    first = (await api.client.get("/backfills")).text
    assert first.count("data-backfill=") == BACKFILLS_LIMIT
    assert f'href="/backfills?offset={BACKFILLS_LIMIT}">Older' in first and "Newer" not in first
    second = (await api.client.get(f"/backfills?offset={BACKFILLS_LIMIT}")).text
    assert re.findall(r'data-backfill="([^"]+)"', second) == [ids[0]]
    assert 'href="/backfills?offset=0">← Newer' in second and "Older" not in second
    await api.client.post(f"/backfills/{ids[3]}/cancel", data={})
    canceled = (await api.client.get("/backfills?status=CANCELED")).text
    assert re.findall(r'data-backfill="([^"]+)"', canceled) == [ids[3]]
    assert (await api.client.get("/backfills?status=COMPLETED")).text.count("No backfill matches")
    assert (await api.client.get("/backfills?status=BOGUS")).status_code == 400


class Clock(testkit.Clock):
    def to_half_past(self) -> None:
        now = self()
        self.advance(math.ceil(now / 3600) * 3600 - now + 1800)


async def test_tick_history_shows_missed_ticks_pages_and_the_catchup_policy(api: Api) -> None:
    snapshot = snapshot_with_instigators()
    repo = snapshot.repositories[0]
    minutely = repo.schedules[1].model_copy(update={"default_status": InstigatorStatus.RUNNING})
    repo = repo.model_copy(update={"schedules": [repo.schedules[0], minutely]})
    await api.load(snapshot.model_copy(update={"repositories": [repo]}))
    clock = Clock()
    clock.to_half_past()
    scheduler = Scheduler(api.cp.db, api.cp.queue, clock=clock)
    await scheduler.check()
    clock.advance(2 * 3600)  # 120 minutes missed; only the newest runs (policy latest)
    await scheduler.check()

    schedules = (await api.client.get("/schedules")).text
    off = schedules.split('data-schedule="off"')[1].split("</section>")[0]
    assert "catch-up: latest (control plane default)" in off
    assert "missed while the scheduler was down" in off and "Tick history" in off

    url = "/locations/loc/schedules/off/ticks"
    first = (await api.client.get(url + "?repo=repo")).text
    assert first.count('<tr class="tick-') == TICKS_PAGE_SIZE
    assert first.count('<tr class="tick-skipped">') == TICKS_PAGE_SIZE - 1
    assert "catch-up policy latest: only the newest missed tick runs" in first
    assert f'href="{url}?repo=repo&offset={TICKS_PAGE_SIZE}">Older' in first
    last = (await api.client.get(url + "?repo=repo&offset=100")).text
    assert last.count('<tr class="tick-') == 20 and "Older" not in last
    started = (await api.client.get(url + "?repo=repo&status=STARTED")).text
    assert started.count('<tr class="tick-') == 1
    assert (await api.client.get(url + "?status=NOPE")).status_code == 400
    assert (await api.client.get("/locations/loc/schedules/nope/ticks")).status_code == 404

    resp = await api.client.post(
        "/locations/loc/schedules/off/catchup",
        data={"repo": "repo", "policy": "NONE", "back": url},
    )
    assert (resp.status_code, resp.headers["location"]) == (303, url)
    page = (await api.client.get(url)).text
    assert "catch-up: none" in page and "(control plane default)" not in page
    assert '<option value="NONE" selected>' in page
    bad = await api.client.post("/locations/loc/schedules/off/catchup", data={"policy": "X"})
    assert bad.status_code == 400

"""The run page lists the attempts of its root run and says why a run failed; the
schedules page shows each schedule's overlap policy."""

from __future__ import annotations

import pytest
from controlplane_testkit import Api, Clock, snapshot_with_instigators
from test_ui_pages import failed_run
from tether.controlplane.daemons.retrier import RunRetrier
from tether.controlplane.runs.policies import PolicyDefaults


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(autouse=True)
def _signed_in(api: Api) -> None:
    api.client.headers["Authorization"] = f"Bearer {api.admin_token}"


async def test_the_run_page_lists_the_attempts_of_its_root(api: Api) -> None:
    run_id = await failed_run(api)
    retrier = RunRetrier(api.cp.db, api.cp.queue, PolicyDefaults(max_retries=1), clock=Clock())
    (decision,) = await retrier.check()
    assert decision.retry_run_id is not None
    retry_id = decision.retry_run_id

    parent = (await api.client.get(f"/runs/{run_id}")).text
    assert 'Failed: <span class="mono">STEP_FAILURE</span>' in parent, parent[
        parent.find("Failed") :
    ][:200]
    assert "Attempts (2)" in parent
    assert f'href="/runs/{retry_id}"' in parent and "retry 1" in parent
    assert f"retried as run {retry_id}" in parent

    retry = (await api.client.get(f"/runs/{retry_id}")).text
    assert "Attempts (2)" in retry
    assert f'href="/runs/{run_id}"' in retry and "first run" in retry
    # A run of its own (no retries) shows no attempts list.
    lone = (await api.launch())["run"]["id"]
    assert "Attempts (" not in (await api.client.get(f"/runs/{lone}")).text


async def test_the_schedules_page_shows_the_overlap_policy(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    html = (await api.client.get("/schedules")).text
    assert "overlap: allow" in html

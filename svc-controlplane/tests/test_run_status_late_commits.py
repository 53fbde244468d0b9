"""A run-status sensor never skips a change committed late (PostgreSQL): an upload that
took a lower event id but commits after a higher-numbered one is still read, because the
sensor reads only up to ids whose writers have all ended (store.run_changes.EventHorizon).
Two real transactions on a real PostgreSQL, the real sensor daemon."""

from __future__ import annotations

import pytest
from controlplane_testkit import Api, Clock
from test_run_status_sensors import (
    _answer,
    _cursor,
    _new_run,
    _skipped,
    _snapshot,
    _tick,
    _worker_ends,
)
from tether.controlplane.daemons import SensorDaemon
from tether.controlplane.runs import lifecycle
from tether.shared.wire.runs import EventType, RunEvent

pytestmark = pytest.mark.integration


@pytest.fixture
def backend() -> str:
    # SQLite serializes writers: ids are always committed in order there.
    return "postgresql"


async def test_an_upload_committing_after_a_later_one_is_not_skipped(
    api: Api, clock: Clock
) -> None:
    await api.load(_snapshot())
    sensors = SensorDaemon(api.cp.db, api.cp.queue, clock=clock)
    first, _ = await _tick(api, sensors, clock)
    await _answer(api, sensors, first, _skipped())
    start = await _cursor(api)
    assert start is not None

    await _new_run(api, "late")
    await _new_run(api, "early")
    async with api.cp.db.transaction() as slow:
        # The "late" worker's upload takes its event ids now and commits last.
        await lifecycle.store_events(
            slow, "default", [RunEvent(run_id="late", seq=1, event_type=EventType.RUN_FAILURE)]
        )
        await slow.flush()
        await _worker_ends(api, "early", EventType.RUN_FAILURE)  # higher ids, committed
        while_open, ids = await _tick(api, sensors, clock)
        # Not "early" alone: reading it would move the cursor past "late" for good.
        assert ids == []
        await _answer(api, sensors, while_open, _skipped())
        assert await _cursor(api) == start
    after, ids = await _tick(api, sensors, clock)
    assert ids == ["late", "early"]
    await _answer(api, sensors, after, _skipped())
    assert int(await _cursor(api) or 0) > int(start)

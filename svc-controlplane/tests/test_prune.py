"""Retention (``tether controlplane prune``) on SQLite and PostgreSQL: ended runs, answered
work items and ended ticks older than the cutoff go, in batches, with what hangs off them;
runs still going, recent history and each instigator's newest tick stay."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from controlplane_testkit import EVENTS, LOGS, Api
from sqlalchemy import func, select, update
from tether.controlplane.cli import app
from tether.controlplane.db.models import (
    ComputeLogChunk,
    Instigator,
    InstigatorTick,
    Run,
    RunEventRow,
    RunTag,
    TickStatus,
    WorkItemRow,
)
from tether.controlplane.prune_cli import parse_duration
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import retention
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.runs import EventType, RunEvent
from typer.testing import CliRunner

DAY = 86400.0


async def history(api: Api) -> dict[str, str]:
    """Runs of every kind, aged: old ended ones, an old one still going, a recent one."""
    await api.load()
    runs = {
        name: (await api.launch(tags={"team": name}))["run"]["id"]
        for name in ("old_a", "old_b", "old_c", "going", "recent")
    }
    now = time.time()
    for name, run_id in runs.items():
        events = [RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START, timestamp=now)]
        events += [
            RunEvent(run_id=run_id, seq=s, event_type=EventType.LOG, step_key="a", message="x")
            for s in range(2, 6)
        ]
        if name != "going":
            events.append(
                RunEvent(run_id=run_id, seq=6, event_type=EventType.RUN_SUCCESS, last_seq=6)
            )
        await api.agent(EVENTS, items=[e.model_dump(mode="json") for e in events])
        chunk = LogChunk(run_id=run_id, step_key="a", stream=LogStream.STDOUT, offset=0, data=b"hi")
        await api.agent(LOGS, items=[chunk.model_dump(mode="json")])
    async with api.cp.db.transaction() as session:
        # Aged by the control plane's clock; their launch items answered long ago.
        old = [runs["old_a"], runs["old_b"], runs["old_c"], runs["going"]]
        await session.execute(
            update(Run).where(Run.id.in_(old)).values(status_changed_at=now - 40 * DAY)
        )
        await session.execute(update(WorkItemRow).values(status="DONE", created_at=now - 40 * DAY))
        await session.execute(
            update(WorkItemRow)
            .where(WorkItemRow.id == f"launch-{runs['recent']}")
            .values(created_at=now)
        )
        state = Instigator(
            deployment_id="default",
            kind="schedule",
            location_name="loc",
            repository_name="",
            name="nightly",
            updated_at=now,
        )
        session.add(state)
        await session.flush()
        for day in range(40, 30, -1):  # ten ticks, all older than 30 days
            session.add(
                InstigatorTick(
                    instigator_id=state.id,
                    tick_time=now - day * DAY,
                    status=str(TickStatus.SUCCESS),
                    created_at=now - day * DAY,
                    updated_at=now - day * DAY,
                )
            )
    return runs


async def counts(api: Api) -> dict[str, int]:
    async with api.cp.db.reading() as session:
        return {
            table.__tablename__: int(
                await session.scalar(select(func.count()).select_from(table)) or 0
            )
            for table in (Run, RunEventRow, RunTag, ComputeLogChunk, WorkItemRow, InstigatorTick)
        }


async def test_prune_deletes_the_old_history_and_keeps_the_rest(api: Api) -> None:
    runs = await history(api)
    before = await counts(api)
    cutoff = time.time() - 30 * DAY
    # A dry run counts and deletes nothing.
    dry = await retention.prune(api.cp.db, cutoff=cutoff, dry_run=True)
    assert await counts(api) == before
    # Batches of 2 runs: several transactions, the same result.
    done = await retention.prune(api.cp.db, cutoff=cutoff, batch=2)
    assert done == dry
    assert done.runs == 3 and done.run_events == 3 * 7 and done.run_tags == 3
    # Every old answered item (the location's load too) but the running run's launch item
    # (and the recent run's).
    assert done.work_items == before["work_items"] - 2 and done.work_results >= 1
    assert done.ticks == 9 and done.run_children >= 3 * 2  # streams and log chunks
    after = await counts(api)
    assert after["runs"] == before["runs"] - 3
    assert after["run_events"] == before["run_events"] - 21
    assert after["compute_log_chunks"] == before["compute_log_chunks"] - 3
    assert after["instigator_ticks"] == 1
    async with api.cp.db.reading() as session:
        left = set((await session.execute(select(Run.id))).scalars())
        items = set((await session.execute(select(WorkItemRow.id))).scalars())
    assert left == {runs["going"], runs["recent"]}
    assert {f"launch-{runs['going']}", f"launch-{runs['recent']}"} <= items
    # The runs kept are whole: the API reads them as before.
    going = await api.user("query($id: String!) { run(id: $id) { eventCount } }", id=runs["going"])
    assert going["run"]["eventCount"] == 1 + 5
    # Nothing more to do.
    assert (await retention.prune(api.cp.db, cutoff=cutoff)).as_dict() == dict.fromkeys(
        done.as_dict(), 0
    )


async def test_the_prune_command(api: Api, settings: ControlPlaneSettings) -> None:
    await history(api)
    env = {"TETHER_CONTROLPLANE_DATABASE_URL": settings.database_url}

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["prune", *args], env=env)
        return result.exit_code, result.output

    code, out = await asyncio.to_thread(invoke, "--older-than", "30d", "--dry-run")
    assert code == 0, out
    dry = json.loads(out)
    assert dry["dry_run"] is True and dry["runs"] == 3 and dry["older_than_s"] == 30 * DAY
    code, out = await asyncio.to_thread(invoke, "--older-than", "30d")
    assert code == 0, out
    assert {**json.loads(out), "dry_run": True} == dry
    # 50 days: nothing is that old.
    code, out = await asyncio.to_thread(invoke, "--older-than", "50d")
    assert code == 0 and json.loads(out)["runs"] == 0
    code, out = await asyncio.to_thread(invoke, "--older-than", "soon")
    assert code == 2 and "positive duration" in out


def test_durations() -> None:
    assert parse_duration("30d") == 30 * DAY
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("1.5w") == 1.5 * 7 * DAY
    for bad in ("0d", "30", "d", "-1d", "3y"):
        with pytest.raises(Exception, match="positive duration"):
            parse_duration(bad)

"""Bounded reads of growing tables through the API: a run's events read on from a cursor
(afterId / afterSeq) in pages of at most MAX_EVENTS_PAGE, and runs paged by a keyset cursor.

Each test runs on SQLite and on PostgreSQL (the ``api`` fixture).
"""

from __future__ import annotations

import time
from typing import Any

from controlplane_testkit import EVENTS, Api, snapshot_with_instigators
from sqlalchemy import select, update
from tether.controlplane.api.runs import MAX_EVENTS_PAGE
from tether.controlplane.db.models import Instigator, InstigatorTick, Run, TickStatus
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.runs import EventType, RunEvent

EVENTS_QUERY = """
query($id: String!, $afterId: Int, $afterSeq: Int, $limit: Int, $newest: Boolean!,
      $types: [EventType!], $step: String, $withError: Boolean) {
  run(id: $id) {
    events(afterId: $afterId, afterSeq: $afterSeq, limit: $limit, newest: $newest,
           eventTypes: $types, stepKey: $step, withError: $withError) {
      id seq eventType stepKey message
    }
    eventCount
    logCount: eventCount(eventTypes: [LOG], stepKey: "a")
  }
}"""


async def events_of(api: Api, run_id: str, **variables: Any) -> list[dict[str, Any]]:
    variables.setdefault("newest", False)
    return (await api.user(EVENTS_QUERY, id=run_id, **variables))["run"]["events"]


async def run_with_events(api: Api, count: int) -> str:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    t = time.time()
    # Stored out of order: seq 1 is stored last, with the earliest timestamp.
    events = [
        RunEvent(
            run_id=run_id,
            seq=seq,
            event_type=EventType.LOG,
            step_key="a" if seq % 2 else "b",
            message=f"line {seq}",
            timestamp=t + seq,
            error=ErrorInfo(message="bad", cls_name="E") if seq == 7 else None,
        )
        for seq in range(2, count + 1)
    ]
    await api.agent(EVENTS, items=[e.model_dump(mode="json") for e in events])
    first = RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START, timestamp=t)
    await api.agent(EVENTS, items=[first.model_dump(mode="json")])
    return run_id


async def test_events_read_on_from_a_cursor_in_bounded_pages(api: Api) -> None:
    run_id = await run_with_events(api, 30)
    everything = await events_of(api, run_id)
    # RUN_ENQUEUED (the control plane's, no seq), then the worker's by timestamp.
    assert [e["seq"] for e in everything] == [None, *range(1, 31)]
    # Paging on by id from 0: in the order they were stored, so the late seq 1 comes last
    # and no page skips it.
    seen: list[int | None] = []
    after = 0
    while page := await events_of(api, run_id, afterId=after, limit=7):
        assert len(page) <= 7
        seen += [e["seq"] for e in page]
        after = page[-1]["id"]
    assert seen == [None, *range(2, 31), 1]
    # By seq: the worker's events only.
    page = await events_of(api, run_id, afterSeq=25)
    assert [e["seq"] for e in page] == [26, 27, 28, 29, 30]
    # The newest of a filtered list, in order; counts.
    page = await events_of(api, run_id, types=["LOG"], step="a", limit=3, newest=True)
    assert [e["seq"] for e in page] == [25, 27, 29]
    counts = (await api.user(EVENTS_QUERY, id=run_id, limit=0, newest=False))["run"]
    assert counts["eventCount"] == 31 and counts["logCount"] == 14
    assert [e["seq"] for e in await events_of(api, run_id, withError=True)] == [7]
    assert len(await events_of(api, run_id, withError=False)) == 30


async def test_an_events_page_over_the_most_is_bad_input(api: Api) -> None:
    run_id = await run_with_events(api, 2)
    for variables in (
        {"limit": MAX_EVENTS_PAGE + 1},
        {"limit": -1},
        {"afterId": 1, "afterSeq": 1},
    ):
        body = await api.post(
            EVENTS_QUERY, token=api.admin_token, id=run_id, newest=False, **variables
        )
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_INPUT", error
    body = await api.post(
        EVENTS_QUERY, token=api.admin_token, id=run_id, newest=False, limit=MAX_EVENTS_PAGE + 1
    )
    assert f"limit must be within 0..{MAX_EVENTS_PAGE}" in body["errors"][0]["message"]
    assert len(await events_of(api, run_id, limit=MAX_EVENTS_PAGE)) == 3


RUNS_QUERY = """
query($after: String, $limit: Int!, $status: RunStatus, $offset: Int!) {
  runs(after: $after, limit: $limit, status: $status, offset: $offset) { id pageCursor }
}"""


async def test_runs_page_on_from_a_keyset_cursor(api: Api) -> None:
    await api.load()
    launched = [(await api.launch())["run"]["id"] for _ in range(12)]
    # Two runs created at the same instant: the id breaks the tie, no page skips either.
    async with api.cp.db.transaction() as session:
        await session.execute(
            update(Run).where(Run.id.in_(launched[3:5])).values(created_at=1_000_000.0)
        )
    by_offset = (await api.user(RUNS_QUERY, limit=100, offset=0))["runs"]
    seen: list[str] = []
    after = None
    while page := (await api.user(RUNS_QUERY, after=after, limit=5, offset=0))["runs"]:
        seen += [r["id"] for r in page]
        after = page[-1]["pageCursor"]
    assert seen == [r["id"] for r in by_offset] and sorted(seen) == sorted(launched)
    # A run created meanwhile does not shift the pages after a cursor.
    cursor = by_offset[4]["pageCursor"]
    before = (await api.user(RUNS_QUERY, after=cursor, limit=3, offset=0))["runs"]
    await api.launch()
    again = (await api.user(RUNS_QUERY, after=cursor, limit=3, offset=0))["runs"]
    assert again == before == by_offset[5:8]
    # With a status filter too.
    queued = await api.user(RUNS_QUERY, after=cursor, limit=100, status="QUEUED", offset=0)
    assert [r["id"] for r in queued["runs"]] == [r["id"] for r in by_offset[5:]]


async def test_a_bad_cursor_or_a_cursor_with_an_offset_is_bad_input(api: Api) -> None:
    await api.load()
    await api.launch()
    cursor = (await api.user(RUNS_QUERY, limit=1, offset=0))["runs"][0]["pageCursor"]
    for after, offset in (("nope", 0), ("W10", 0), (cursor, 3)):
        body = await api.post(
            RUNS_QUERY, token=api.admin_token, after=after, limit=5, offset=offset
        )
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_INPUT", error
    body = await api.post('{ backfills(after: "nope") { id } }', token=api.admin_token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_INPUT"


TICKS_QUERY = """
query($after: String) {
  schedules(locationName: "loc") { name ticks(limit: 3, after: $after) { tickTime pageCursor } }
}"""


async def test_ticks_page_on_from_a_keyset_cursor(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    await api.user('mutation { startSchedule(locationName: "loc", name: "off") { status } }')
    async with api.cp.db.transaction() as session:
        state = await session.scalar(select(Instigator).where(Instigator.name == "off"))
        assert state is not None
        for t in range(1, 9):
            session.add(
                InstigatorTick(
                    instigator_id=state.id,
                    tick_time=float(t * 60),
                    status=str(TickStatus.SKIPPED),
                    created_at=float(t * 60),
                    updated_at=float(t * 60),
                )
            )

    async def page(after: str | None) -> list[dict[str, Any]]:
        schedules = (await api.user(TICKS_QUERY, after=after))["schedules"]
        return next(s for s in schedules if s["name"] == "off")["ticks"]

    seen: list[float] = []
    after = None
    while ticks := await page(after):
        seen += [t["tickTime"] for t in ticks]
        after = ticks[-1]["pageCursor"]
    assert seen == [float(t * 60) for t in range(8, 0, -1)]

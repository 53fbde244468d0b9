"""Uploads from agents are validated as a batch, idempotent, and move runs forward only."""

from __future__ import annotations

import base64
import time
from typing import Any

from controlplane_testkit import EVENTS, LOGS, Api
from sqlalchemy import func, select
from tether.controlplane.db.models import RunEventRow
from tether.shared.errors import BAD_INPUT
from tether.shared.messages import EventType, LogChunk, RunEvent
from tether.shared.subjects import LogStream


async def _queued_run(api: Api) -> str:
    await api.load()
    launched = await api.launch()
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["id"]


def _event(run_id: str, seq: int, event_type: EventType, ts: float, **kw: Any) -> dict[str, Any]:
    return RunEvent(run_id=run_id, seq=seq, event_type=event_type, timestamp=ts, **kw).model_dump(
        mode="json"
    )


async def _event_count(api: Api) -> int:
    async with api.cp.db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(RunEventRow)) or 0)


async def test_events_are_idempotent_and_status_only_moves_forward(api: Api) -> None:
    run_id = await _queued_run(api)
    t0 = time.time()
    first = [
        _event(run_id, 1, EventType.RUN_START, t0 + 0),
        _event(run_id, 2, EventType.STEP_START, t0 + 1, step_key="a"),
    ]
    assert (await api.agent(EVENTS, items=first))["storeEvents"] == {"stored": 2, "duplicates": 0}
    assert (await api.agent(EVENTS, items=first))["storeEvents"] == {"stored": 0, "duplicates": 2}
    run = await api.run(run_id)
    assert run["status"] == "STARTED"
    assert run["startedAt"] == t0

    done = [
        _event(run_id, 4, EventType.RUN_SUCCESS, t0 + 3),
        _event(run_id, 3, EventType.STEP_SUCCESS, t0 + 2, step_key="a"),
    ]
    assert (await api.agent(EVENTS, items=done))["storeEvents"]["stored"] == 2
    # Late or contradicting events are stored but never move a finished run.
    late = [
        _event(run_id, 5, EventType.RUN_CANCELING, t0 + 4),
        _event(run_id, 6, EventType.RUN_FAILURE, t0 + 5),
    ]
    assert (await api.agent(EVENTS, items=late))["storeEvents"]["stored"] == 2
    run = await api.run(run_id)
    assert run["status"] == "SUCCESS"
    assert run["endedAt"] == t0 + 3
    # The control plane's own event (seq null) first, then the worker's in order.
    assert [(e["seq"], e["eventType"]) for e in run["events"]] == [
        (None, "RUN_ENQUEUED"),
        (1, "RUN_START"),
        (2, "STEP_START"),
        (3, "STEP_SUCCESS"),
        (4, "RUN_SUCCESS"),
        (5, "RUN_CANCELING"),
        (6, "RUN_FAILURE"),
    ]
    newest = run["events"][-1]["id"]
    after = (
        await api.user(
            "query($id: String!, $after: Int) { run(id: $id) { events(afterId: $after) { seq } } }",
            id=run_id,
            after=run["events"][-3]["id"],
        )
    )["run"]["events"]
    assert [e["seq"] for e in after] == [5, 6]
    assert newest > run["events"][0]["id"]


async def test_a_malformed_event_batch_is_refused_whole(api: Api) -> None:
    run_id = await _queued_run(api)
    before = await _event_count(api)
    batch = [
        _event(run_id, 1, EventType.RUN_START, time.time()),
        {"type": "tether.v1.run_event", "run_id": run_id, "seq": 0, "event_type": "RUN_START"},
        {"run_id": run_id, "seq": 3, "event_type": "NOT_A_TYPE"},
        "not an object",
    ]
    body = await api.post(EVENTS, token=api.token, items=batch)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == BAD_INPUT
    assert "#1" in error["message"] and "#2" in error["message"] and "#3" in error["message"]
    assert "nothing was stored" in error["message"]
    assert await _event_count(api) == before
    assert (await api.run(run_id))["status"] == "QUEUED"


async def test_events_of_unknown_runs_are_refused(api: Api) -> None:
    body = await api.post(
        EVENTS, token=api.token, items=[_event("f" * 32, 1, EventType.RUN_START, 1.0)]
    )
    assert body["errors"][0]["extensions"]["code"] == BAD_INPUT
    assert "unknown run" in body["errors"][0]["message"]


def _chunk(run_id: str, offset: int, data: bytes, stream: LogStream = LogStream.STDOUT) -> Any:
    return LogChunk(
        run_id=run_id, step_key="a", stream=stream, offset=offset, data=data
    ).model_dump(mode="json")


async def test_compute_logs_are_idempotent_and_read_back_in_order(api: Api) -> None:
    run_id = await _queued_run(api)
    chunks = [
        _chunk(run_id, 6, b"world\n"),
        _chunk(run_id, 0, b"hello "),
        _chunk(run_id, 0, b"oops\n", LogStream.STDERR),
        _chunk(run_id, 20, b"after a gap"),
    ]
    assert chunks[0]["data"] == base64.b64encode(b"world\n").decode()
    assert (await api.agent(LOGS, items=chunks))["appendComputeLogs"] == {
        "stored": 4,
        "duplicates": 0,
    }
    again = await api.agent(LOGS, items=chunks[:2])
    assert again["appendComputeLogs"] == {"stored": 0, "duplicates": 2}

    query = """query($id: String!, $step: String, $stream: String, $offset: Int) {
      run(id: $id) { computeLogs(stepKey: $step, stream: $stream, offset: $offset) {
        stepKey stream offset nextOffset text } } }"""
    logs = (await api.user(query, id=run_id))["run"]["computeLogs"]
    by_stream = {log["stream"]: log for log in logs}
    # Bytes after a gap wait until the gap is filled.
    assert by_stream["stdout"]["text"] == "hello world\n"
    assert by_stream["stdout"]["nextOffset"] == 12
    assert by_stream["stderr"]["text"] == "oops\n"
    tail = (await api.user(query, id=run_id, stream="stdout", offset=3))["run"]["computeLogs"]
    assert [(t["offset"], t["text"]) for t in tail] == [(3, "lo world\n")]


async def test_compute_logs_are_read_on_from_an_offset_in_bounded_answers(api: Api) -> None:
    """A reader following a stream gets what is past its offset, at most ``limit`` bytes,
    never half a character; a stream with nothing new is still listed."""
    run_id = await _queued_run(api)
    text = "hello wörld\n"  # 'ö' is bytes 7-8
    data = text.encode()
    chunks = [_chunk(run_id, i, data[i : i + 4]) for i in range(0, len(data), 4)]
    chunks.append(_chunk(run_id, 0, b"oops\n", LogStream.STDERR))
    await api.agent(LOGS, items=chunks)
    query = """query($id: String!, $stream: String, $offset: Int, $limit: Int) {
      run(id: $id) { computeLogs(stream: $stream, offset: $offset, limit: $limit) {
        stepKey stream offset nextOffset text } } }"""

    async def read(offset: int, limit: int | None = None, stream: str | None = "stdout") -> Any:
        logs = await api.user(query, id=run_id, stream=stream, offset=offset, limit=limit)
        return [
            (log["stream"], log["text"], log["nextOffset"]) for log in logs["run"]["computeLogs"]
        ]

    # Eight bytes would end inside 'ö': the answer stops before it.
    assert await read(0, limit=8) == [("stdout", "hello w", 7)]
    assert await read(7, limit=8) == [("stdout", "örld\n", 13)]
    assert await read(10) == [("stdout", "ld\n", 13)]  # from inside a chunk
    assert await read(13, stream=None) == [("stderr", "", 13), ("stdout", "", 13)]
    body = await api.post(query, token=api.admin_token, id=run_id, offset=0, limit=0)
    assert "limit must be at least 1" in body["errors"][0]["message"]


async def test_large_batches_store_every_row_once(api: Api) -> None:
    """Batches far over SQLite's bound-parameter cap, half of them already stored."""
    run_id = await _queued_run(api)
    now = time.time()
    events = [_event(run_id, seq, EventType.LOG, now, message=str(seq)) for seq in range(1, 3001)]
    first = await api.agent(EVENTS, items=events[:1500])
    assert first["storeEvents"] == {"stored": 1500, "duplicates": 0}
    both = await api.agent(EVENTS, items=events)
    assert both["storeEvents"] == {"stored": 1500, "duplicates": 1500}
    assert await _event_count(api) == 3000 + 1  # and RUN_ENQUEUED

    chunks = [_chunk(run_id, 2 * i, b"ab") for i in range(3000)]
    assert (await api.agent(LOGS, items=chunks[::2]))["appendComputeLogs"]["stored"] == 1500
    assert (await api.agent(LOGS, items=chunks))["appendComputeLogs"] == {
        "stored": 1500,
        "duplicates": 1500,
    }
    query = "query($id: String!) { run(id: $id) { computeLogs { text } } }"
    (log,) = (await api.user(query, id=run_id))["run"]["computeLogs"]
    assert log["text"] == "ab" * 3000


async def test_malformed_log_chunks_are_refused(api: Api) -> None:
    run_id = await _queued_run(api)
    bad = _chunk(run_id, 0, b"x") | {"data": "***not base64***"}
    body = await api.post(LOGS, token=api.token, items=[_chunk(run_id, 1, b"y"), bad])
    assert body["errors"][0]["extensions"]["code"] == BAD_INPUT
    logs = (
        await api.user("query($id: String!) { run(id: $id) { computeLogs { text } } }", id=run_id)
    )["run"]["computeLogs"]
    assert logs == []


async def test_heartbeats_upsert_agents(api: Api) -> None:
    query = "mutation H($hb: JSON!) { heartbeat(heartbeat: $hb) }"
    for state in ("starting", "running"):
        hb = {"type": "tether.v1.heartbeat", "agent_id": "a1", "services": {"poller": state}}
        assert (await api.agent(query, hb=hb))["heartbeat"] is True
    agents = (await api.user("{ agents { agentId lastHeartbeat services } }"))["agents"]
    assert [(a["agentId"], a["services"]) for a in agents] == [("a1", {"poller": "running"})]
    body = await api.post(query, token=api.token, hb={"agent_id": 3, "bogus": True})
    assert body["errors"][0]["extensions"]["code"] == BAD_INPUT


async def test_nul_characters_in_event_text_are_stored_on_every_database(api: Api) -> None:
    # PostgreSQL text cannot hold NUL; user code can print anything, and losing (or forever
    # retrying) a batch over it would be worse than replacing the character.
    run_id = await _queued_run(api)
    event = _event(run_id, 1, EventType.LOG, time.time(), message="a\x00b", step_key="s\x00")
    event["data"] = {"k\x00": "v\x00"}
    assert (await api.agent(EVENTS, items=[event]))["storeEvents"]["stored"] == 1
    (stored,) = [e for e in (await api.run(run_id))["events"] if e["seq"] == 1]
    assert stored["message"] == "a\ufffdb"
    assert stored["stepKey"] == "s\ufffd"
    assert stored["data"] == {"k\ufffd": "v\ufffd"}


async def test_values_the_database_cannot_hold_are_bad_input(api: Api, backend: str) -> None:
    run_id = await _queued_run(api)
    event = _event(run_id, 1, EventType.STEP_START, time.time(), step_key="s" * 300)
    body = await api.post(EVENTS, token=api.token, items=[event])
    if backend == "sqlite":
        # SQLite does not enforce VARCHAR lengths (see the README's known limits).
        assert body["data"]["storeEvents"]["stored"] == 1
        return
    (error,) = body["errors"]
    assert error["extensions"]["code"] == BAD_INPUT
    assert "value too long" in error["message"] and "nothing was stored" in error["message"]
    assert await _event_count(api) == 1  # only the run's RUN_ENQUEUED

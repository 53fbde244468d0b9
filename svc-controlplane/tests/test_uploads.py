"""Uploads from agents are validated as a batch, idempotent, and move runs forward only."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from controlplane_testkit import CLAIM, EVENTS, EVENTS_OUTCOME, LOGS, LOGS_OUTCOME, Api
from sqlalchemy import func, select
from test_graphql_limits import serving
from tether.controlplane.db.models import RunEventRow, WorkItemRow
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.errors import BAD_INPUT
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.runs import EventType, RunEvent

CLAIM_VARS = {"agentId": "a", "substrates": ["process"], "max": 1, "waitMs": 0, "leaseSeconds": 1}


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


async def test_malformed_events_are_refused_alone_and_the_others_stored(api: Api) -> None:
    run_id = await _queued_run(api)
    before = await _event_count(api)
    batch = [
        _event(run_id, 1, EventType.RUN_START, time.time()),
        {"type": "tether.v1.run_event", "run_id": run_id, "seq": 0, "event_type": "RUN_START"},
        {"run_id": run_id, "seq": 3, "event_type": "NOT_A_TYPE"},
        "not an object",
    ]
    outcome = (await api.agent(EVENTS_OUTCOME, items=batch))["storeEvents"]
    assert (outcome["stored"], outcome["duplicates"]) == (1, 0)
    assert [r["index"] for r in outcome["refused"]] == [1, 2, 3]
    reasons = [r["reason"] for r in outcome["refused"]]
    assert "seq" in reasons[0] and "event_type" in reasons[1] and "JSON object" in reasons[2]
    assert await _event_count(api) == before + 1
    assert (await api.run(run_id))["status"] == "STARTED"


async def test_events_of_unknown_runs_are_refused(api: Api) -> None:
    outcome = (
        await api.agent(EVENTS_OUTCOME, items=[_event("f" * 32, 1, EventType.RUN_START, 1.0)])
    )["storeEvents"]
    assert outcome["stored"] == 0
    assert outcome["refused"] == [
        {"index": 0, "reason": f"run_id {'f' * 32!r} names no run of this deployment", "id": None}
    ]


async def test_values_out_of_bounds_are_refused_alone(api: Api) -> None:
    # seq >= 2**63 and a NaN timestamp once got a masked internal error, which a relay
    # retries for ever, holding back every event behind them.
    run_id = await _queued_run(api)
    now = time.time()
    batch = [
        _event(run_id, 1, EventType.RUN_START, now),
        _event(run_id, 2, EventType.LOG, now) | {"seq": 2**63},
        _event(run_id, 3, EventType.LOG, now) | {"timestamp": float("nan")},
        _event(run_id, 4, EventType.LOG, now) | {"timestamp": float("inf")},
        _event(run_id, 5, EventType.LOG, now, step_key="bad\nkey"),
        _event(run_id, 6, EventType.LOG, now, step_key="s" * 201),
        _event(run_id, 7, EventType.LOG, now) | {"traceparent": "not-a-traceparent"},
        _event(run_id, 8, EventType.RUN_SUCCESS, now + 1),
    ]
    body = await _post_with_nan(api, EVENTS_OUTCOME, items=batch)
    outcome = body["data"]["storeEvents"]
    assert (outcome["stored"], outcome["duplicates"]) == (2, 0)
    reasons = {r["index"]: r["reason"] for r in outcome["refused"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert "seq must be within [0, 2**63 - 1]" in reasons[1]
    assert "timestamp must be finite" in reasons[2] and "timestamp must be finite" in reasons[3]
    assert "step_key must be 1-200 printable characters" in reasons[4]
    assert "step_key must be 1-200" in reasons[5]
    assert "traceparent" in reasons[6]
    run = await api.run(run_id)
    assert run["status"] == "SUCCESS"
    assert sorted(e["seq"] for e in run["events"] if e["seq"]) == [1, 8]
    # Chunks too: an offset past a BIGINT is refused alone.
    chunks = [_chunk(run_id, 0, b"ok"), _chunk(run_id, 2**63, b"x")]
    outcome = (await api.agent(LOGS_OUTCOME, items=chunks))["appendComputeLogs"]
    assert outcome["stored"] == 1 and [r["index"] for r in outcome["refused"]] == [1]


async def _post_with_nan(api: Api, query: str, **variables: Any) -> dict[str, Any]:
    """POST as the agent, with NaN and Infinity as Python's json writes them (a client
    need not be strict)."""
    resp = await api.client.post(
        "/graphql",
        content=json.dumps({"query": query, "variables": variables}),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )
    return resp.json()


async def test_an_upload_over_the_item_count_is_refused_whole(
    settings: ControlPlaneSettings,
) -> None:
    async with serving(settings, upload_max_items=3) as api:
        run_id = await _queued_run(api)
        events = [_event(run_id, seq, EventType.LOG, time.time()) for seq in range(1, 5)]
        body = await api.post(EVENTS, token=api.token, items=events)
        (error,) = body["errors"]
        assert error["extensions"]["code"] == BAD_INPUT
        assert "4 run events in one request, over the limit of 3" in error["message"]
        assert "TETHER_CONTROLPLANE_UPLOAD_MAX_ITEMS" in error["message"]
        assert (await api.agent(EVENTS, items=events[:3]))["storeEvents"]["stored"] == 3


async def test_claim_leases_are_bounded(api: Api) -> None:
    # graphql-core's Float refuses Infinity itself; the resolver checks again.
    body = await _post_with_nan(api, CLAIM, **{**CLAIM_VARS, "leaseSeconds": float("inf")})
    assert "leaseSeconds" in body["errors"][0]["message"] and body.get("data") is None
    (item,) = await api.claim(lease_s=1e12)
    async with api.cp.db.reading() as session:
        expires = await session.scalar(
            select(WorkItemRow.lease_expires_at).where(WorkItemRow.id == item.id)
        )
    assert expires is not None and expires <= time.time() + api.cp.settings.work_max_lease_s
    body = await api.post(CLAIM, token=api.token, **{**CLAIM_VARS, "agentId": "a\x00b"})
    assert "agentId must be 1-200 printable characters" in body["errors"][0]["message"]


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
    assert "limit must be within [1, " in body["errors"][0]["message"]


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
    outcome = await api.agent(LOGS_OUTCOME, items=[_chunk(run_id, 0, b"y"), bad])
    ((refused,),) = [outcome["appendComputeLogs"]["refused"]]
    assert refused["index"] == 1 and "data" in refused["reason"]
    logs = (
        await api.user("query($id: String!) { run(id: $id) { computeLogs { text } } }", id=run_id)
    )["run"]["computeLogs"]
    assert [log["text"] for log in logs] == ["y"]


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


async def test_values_the_database_cannot_hold_are_refused_on_every_database(api: Api) -> None:
    run_id = await _queued_run(api)
    event = _event(run_id, 1, EventType.STEP_START, time.time(), step_key="s" * 300)
    outcome = (await api.agent(EVENTS_OUTCOME, items=[event]))["storeEvents"]
    assert outcome["stored"] == 0
    assert "step_key must be 1-200 printable characters" in outcome["refused"][0]["reason"]
    assert await _event_count(api) == 1  # only the run's RUN_ENQUEUED

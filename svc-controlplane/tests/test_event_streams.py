"""A run's record says whether it is complete: the terminal event names the last seq, the
control plane counts the distinct seqs stored, and ``Run.eventStream`` (and the run page)
says how many are still arriving and which an agent reported lost.

On both databases, through the real agent API; one test races uploads of one run against
each other (PostgreSQL runs them on separate connections at once).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from controlplane_testkit import EVENTS, Api
from tether.controlplane.store.eventstreams import stream_state
from tether.shared.wire.runs import EventType, LostRunEvents, RunEvent

STREAM = """
query($id: String!) {
  run(id: $id) {
    status
    eventStream {
      complete lastSeq storedCount missingCount lostCount lostSeqs lostReasons completedAt
    }
  }
}"""
LOST = """
mutation X($items: [JSON!]!) {
  reportLostEvents(reports: $items) { stored duplicates refused { index reason } }
}"""


def ev(run_id: str, seq: int, kind: EventType = EventType.LOG, **kw: Any) -> dict[str, Any]:
    event = RunEvent(run_id=run_id, seq=seq, event_type=kind, timestamp=time.time(), **kw)
    return event.model_dump(mode="json")


def end(run_id: str, seq: int, kind: EventType = EventType.RUN_SUCCESS) -> dict[str, Any]:
    return ev(run_id, seq, kind, last_seq=seq)


async def upload(api: Api, *events: dict[str, Any]) -> dict[str, Any]:
    return dict((await api.agent(EVENTS, items=list(events)))["storeEvents"])


async def stream(api: Api, run_id: str) -> dict[str, Any]:
    run = (await api.user(STREAM, id=run_id))["run"]
    return {"status": run["status"], **run["eventStream"]}


async def new_run(api: Api) -> str:
    await api.load()
    return str((await api.launch())["run"]["id"])


# --- the state from what is stored (pure) ------------------------------------------------


def test_a_stream_is_complete_only_when_every_seq_up_to_the_last_is_stored() -> None:
    assert stream_state(last_seq=None, stored=0, highest_seq=0).complete is False
    going = stream_state(last_seq=None, stored=3, highest_seq=5)
    assert (going.complete, going.missing) == (False, 2)  # gaps below the highest seq
    ended = stream_state(last_seq=10, stored=4, highest_seq=10)
    assert (ended.complete, ended.missing, ended.expected) == (False, 6, 10)
    assert stream_state(last_seq=10, stored=10, highest_seq=10).complete is True


def test_lost_seqs_are_not_missing_and_those_past_the_end_are_not_the_streams() -> None:
    state = stream_state(
        last_seq=10, stored=7, highest_seq=10, lost=[(12, "past"), (4, "x"), (3, "y"), (5, "x")]
    )
    assert (state.lost, state.lost_count, state.missing) == ((3, 4, 5), 3, 0)
    assert state.lost_reasons == ("y", "x")
    assert state.complete is False  # lost events make a record incomplete for good
    # Before the end is known, a lost seq past the highest stored still counts.
    early = stream_state(last_seq=None, stored=2, highest_seq=2, lost=[(4, "x")])
    assert (early.expected, early.missing, early.lost_count) == (4, 1, 1)


# --- through the API, on both databases --------------------------------------------------


async def test_terminal_event_first_then_gaps_filled_out_of_order_with_duplicates(
    api: Api,
) -> None:
    run_id = await new_run(api)
    before = await stream(api, run_id)
    assert before["lastSeq"] is None and before["storedCount"] == 0
    assert (before["complete"], before["missingCount"]) == (False, 0)

    # The terminal event arrives first (another relay had the rest): SUCCESS at once,
    # but the stream says 5 of 6 events are missing.
    assert (await upload(api, end(run_id, 6)))["stored"] == 1
    s = await stream(api, run_id)
    assert s["status"] == "SUCCESS"
    assert (s["complete"], s["lastSeq"], s["storedCount"], s["missingCount"]) == (False, 6, 1, 5)
    assert s["completedAt"] is None

    # Out of order, with duplicates inside an upload and across uploads.
    await upload(api, ev(run_id, 4), ev(run_id, 2), ev(run_id, 4))
    await upload(api, ev(run_id, 2), end(run_id, 6), ev(run_id, 1, EventType.RUN_START))
    s = await stream(api, run_id)
    assert (s["complete"], s["storedCount"], s["missingCount"]) == (False, 4, 2)

    before_complete = time.time()
    await upload(api, ev(run_id, 5), ev(run_id, 3))
    s = await stream(api, run_id)
    assert (s["complete"], s["storedCount"], s["missingCount"], s["lostCount"]) == (
        True,
        6,
        0,
        0,
    )
    assert s["completedAt"] >= before_complete
    # Re-uploading everything changes nothing.
    await upload(api, *(ev(run_id, n) for n in range(1, 6)), end(run_id, 6))
    again = await stream(api, run_id)
    assert again == s


async def test_a_running_run_shows_gaps_below_its_highest_seq(api: Api) -> None:
    run_id = await new_run(api)
    await upload(api, ev(run_id, 1, EventType.RUN_START), ev(run_id, 2), ev(run_id, 5))
    s = await stream(api, run_id)
    assert s["status"] == "STARTED"
    assert (s["complete"], s["lastSeq"], s["storedCount"], s["missingCount"]) == (False, None, 3, 2)


async def test_a_terminal_event_without_last_seq_ends_the_stream_at_its_own_seq(
    api: Api,
) -> None:
    # A worker older than last_seq: its terminal event was published last all the same.
    run_id = await new_run(api)
    await upload(api, ev(run_id, 1, EventType.RUN_START), ev(run_id, 3, EventType.RUN_FAILURE))
    s = await stream(api, run_id)
    assert (s["status"], s["lastSeq"], s["missingCount"], s["complete"]) == (
        "FAILURE",
        3,
        1,
        False,
    )


async def test_lost_seqs_are_shown_until_they_arrive_after_all(api: Api) -> None:
    run_id = await new_run(api)
    await upload(api, ev(run_id, 1, EventType.RUN_START), end(run_id, 5))
    report = LostRunEvents(run_id=run_id, seqs=[2, 3], reason="refused by control plane: boom")
    outcome = (await api.agent(LOST, items=[report.model_dump(mode="json")]))["reportLostEvents"]
    assert outcome == {"stored": 1, "duplicates": 0, "refused": []}
    again = (await api.agent(LOST, items=[report.model_dump(mode="json")]))["reportLostEvents"]
    assert again == {"stored": 0, "duplicates": 1, "refused": []}
    s = await stream(api, run_id)
    assert (s["complete"], s["missingCount"], s["lostCount"], s["lostSeqs"]) == (
        False,
        1,
        2,
        [2, 3],
    )
    assert s["lostReasons"] == ["refused by control plane: boom"]
    # Another copy of seq 3 got through after all: not lost any more.
    await upload(api, ev(run_id, 3), ev(run_id, 4))
    s = await stream(api, run_id)
    assert (s["complete"], s["missingCount"], s["lostSeqs"]) == (False, 0, [2])


async def test_bad_lost_reports_are_refused_alone(api: Api) -> None:
    run_id = await new_run(api)
    good = LostRunEvents(run_id=run_id, seqs=[7], reason="malformed").model_dump(mode="json")
    items = [
        {**good, "run_id": "nope"},
        {**good, "seqs": [0]},
        {**good, "seqs": []},
        {**good, "seqs": [2**63]},
        good,
    ]
    outcome = (await api.agent(LOST, items=items))["reportLostEvents"]
    assert outcome["stored"] == 1
    refused = {r["index"]: r["reason"] for r in outcome["refused"]}
    assert sorted(refused) == [0, 1, 2, 3]
    assert "names no run of this deployment" in refused[0]
    assert "2**63 - 1" in refused[3]
    assert (await stream(api, run_id))["lostSeqs"] == [7]


async def test_a_user_token_cannot_report_lost_events(api: Api) -> None:
    run_id = await new_run(api)
    item = LostRunEvents(run_id=run_id, seqs=[1], reason="x").model_dump(mode="json")
    body = await api.post(LOST, token=api.admin_token, items=[item])
    assert body.get("errors"), body
    assert (await stream(api, run_id))["lostCount"] == 0


async def test_concurrent_uploads_of_one_run_count_every_seq_once(api: Api) -> None:
    run_id = await new_run(api)
    last = 200
    await upload(api, end(run_id, last))
    # Every other seq twice, in interleaved uploads racing each other (separate
    # connections on PostgreSQL): the count must come out exact, and complete.
    seqs = list(range(1, last))
    batches = [[ev(run_id, n) for n in seqs[i::8]] for i in range(8)]
    batches += [[ev(run_id, n) for n in seqs[i::5]] for i in range(5)]
    await asyncio.gather(*(upload(api, *batch) for batch in batches))
    s = await stream(api, run_id)
    assert (s["complete"], s["storedCount"], s["missingCount"]) == (True, last, 0)
    assert s["completedAt"] is not None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_run_page_says_events_are_arriving_or_lost(api: Api) -> None:
    run_id = await new_run(api)
    api.client.headers["Authorization"] = f"Bearer {api.admin_token}"
    await upload(api, ev(run_id, 1, EventType.RUN_START), end(run_id, 4))
    html = (await api.client.get(f"/runs/{run_id}")).text
    assert 'data-status="SUCCESS"' in html
    assert "events still arriving (2 missing)" in html
    # Ended, but its events are still coming: the page keeps polling.
    # (Each refresh asks only for the events after the newest shown: ?after=<id>.)
    assert re.search(rf'hx-get="/runs/{run_id}/live(\?after=\d+)?" hx-trigger="every 2s"', html)

    report = LostRunEvents(run_id=run_id, seqs=[2], reason="malformed run event")
    await api.agent(LOST, items=[report.model_dump(mode="json")])
    html = (await api.client.get(f"/runs/{run_id}/live")).text
    assert "events still arriving (1 missing)" in html
    assert "1 event lost: " in html and ">2</span>" in html and "malformed run event" in html

    await upload(api, ev(run_id, 3))
    html = (await api.client.get(f"/runs/{run_id}")).text
    assert "events still arriving" not in html
    assert "1 event lost: " in html
    assert 'hx-trigger="every 2s"' not in html.split('id="live"', 1)[1].split(">", 1)[0]

    await upload(api, ev(run_id, 2))
    html = (await api.client.get(f"/runs/{run_id}")).text
    assert "event lost" not in html and "events still arriving" not in html

"""Compute logs kept in customer storage: the control plane stores pointers only, and asks
the agent for presigned URLs (a work item answered through the agent API)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from controlplane_testkit import LOGS, POINTERS_OUTCOME, Api
from tether.controlplane.errors import BAD_INPUT
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.logs import ComputeLogPointer, LogChunk, LogStream, compute_log_key_suffix
from tether.shared.wire.work import (
    PresignComputeLogsPayload,
    PresignedComputeLogs,
    PresignedUrl,
    WorkItem,
    WorkKind,
    WorkResult,
)

POINTERS = """mutation P($items: [JSON!]!) {
  appendComputeLogPointers(pointers: $items) { stored duplicates } }"""
STREAMS = """query($id: String!) {
  computeLogStreams(runId: $id) { stepKey stream storage size objects location } }"""
URLS = """query($id: String!, $step: String!, $stream: String!, $offset: Int!, $timeout: Float!) {
  computeLogUrls(runId: $id, stepKey: $step, stream: $stream, offset: $offset,
                 timeoutSeconds: $timeout) {
    urls { offset length skip url } expiresAt hasMore nextOffset } }"""


async def _queued_run(api: Api) -> str:
    await api.load()
    launched = await api.launch()
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["id"]


def _pointer(run_id: str, offset: int, length: int, **kw: Any) -> dict[str, Any]:
    return ComputeLogPointer(
        run_id=run_id,
        step_key="a",
        stream=LogStream.STDOUT,
        offset=offset,
        length=length,
        bucket="logs",
        key="tether/" + compute_log_key_suffix(run_id, "a", "stdout", offset, offset + length),
        **kw,
    ).model_dump(mode="json")


async def test_pointers_are_idempotent_and_a_longer_object_replaces_a_shorter(api: Api) -> None:
    run_id = await _queued_run(api)
    first = [_pointer(run_id, 0, 10), _pointer(run_id, 10, 5)]
    assert (await api.agent(POINTERS, items=first))["appendComputeLogPointers"] == {
        "stored": 2,
        "duplicates": 0,
    }
    # A redelivered batch: nothing new.
    again = await api.agent(POINTERS, items=first)
    assert again["appendComputeLogPointers"] == {"stored": 0, "duplicates": 2}
    # The same offset merged with more chunks (and twice in one batch): the longer wins.
    longer = [_pointer(run_id, 0, 12), _pointer(run_id, 0, 15)]
    assert (await api.agent(POINTERS, items=longer))["appendComputeLogPointers"]["stored"] == 1

    (summary,) = (await api.user(STREAMS, id=run_id))["computeLogStreams"]
    assert summary == {
        "stepKey": "a",
        "stream": "stdout",
        "storage": "s3",
        "size": 15,
        "objects": 2,
        "location": "s3://logs/",
    }
    # The control plane holds no bytes of these logs.
    logs = await api.user(
        "query($id: String!) { run(id: $id) { computeLogs { text } } }", id=run_id
    )
    assert logs["run"]["computeLogs"] == []


async def test_pointers_of_unknown_runs_or_malformed_are_refused(api: Api) -> None:
    run_id = await _queued_run(api)
    body = await api.post(POINTERS_OUTCOME, token=api.token, items=[_pointer("f" * 32, 0, 1)])
    assert (
        "names no run of this deployment"
        in body["data"]["appendComputeLogPointers"]["refused"][0]["reason"]
    )
    bad = _pointer(run_id, 0, 1) | {"length": 0}
    body = await api.post(POINTERS_OUTCOME, token=api.token, items=[bad])
    ((refused,),) = [body["data"]["appendComputeLogPointers"]["refused"]]
    assert refused["index"] == 0 and "length" in refused["reason"]
    assert (await api.user(STREAMS, id=run_id))["computeLogStreams"] == []
    # Users cannot upload pointers.
    body = await api.post(POINTERS, token=api.admin_token, items=[_pointer(run_id, 0, 1)])
    assert body["errors"]


async def test_a_pointer_must_name_the_object_of_its_run_and_stream(api: Api) -> None:
    # The control plane later asks the agent to presign exactly the keys pointers recorded:
    # one naming another run's object, or any other key of the bucket, is refused.
    run_id = await _queued_run(api)
    other = _pointer("f" * 32, 0, 1)["key"]
    items = [
        _pointer(run_id, 0, 1) | {"key": "secrets/credentials.json"},
        _pointer(run_id, 0, 1) | {"key": other},
        _pointer(run_id, 0, 1) | {"key": "../" + _pointer(run_id, 0, 1)["key"]},
        _pointer(run_id, 0, 1) | {"key": _pointer(run_id, 0, 2)["key"]},  # other bytes
        _pointer(run_id, 0, 1),
    ]
    outcome = (await api.agent(POINTERS_OUTCOME, items=items))["appendComputeLogPointers"]
    assert outcome["stored"] == 1
    assert [r["index"] for r in outcome["refused"]] == [0, 1, 2, 3]
    assert all("is not the object of its run" in r["reason"] for r in outcome["refused"])


async def test_control_plane_streams_say_so(api: Api) -> None:
    run_id = await _queued_run(api)
    chunk = LogChunk(run_id=run_id, step_key="b", stream=LogStream.STDERR, offset=0, data=b"hi")
    await api.agent(LOGS, items=[chunk.model_dump(mode="json")])
    (summary,) = (await api.user(STREAMS, id=run_id))["computeLogStreams"]
    assert (summary["storage"], summary["size"], summary["location"]) == ("controlplane", 2, None)


async def _answer_presign(api: Api, answer: Any) -> WorkItem:
    """Act as the agent: claim the presign item and submit what ``answer`` makes of it."""
    while True:
        items = [i for i in await api.claim(wait_ms=200) if i.kind == WorkKind.PRESIGN_COMPUTE_LOGS]
        if items:
            (item,) = items
            await api.submit(answer(item))
            return item


async def test_urls_are_presigned_by_the_agent(api: Api) -> None:
    run_id = await _queued_run(api)
    empty = await api.user(URLS, id=run_id, step="a", stream="stdout", offset=0, timeout=1.0)
    assert empty["computeLogUrls"] == {
        "urls": [],
        "expiresAt": None,
        "hasMore": False,
        "nextOffset": 0,
    }
    # Objects [0,10) and [5,20) (a redelivery merged differently) and [20,25).
    await api.agent(
        POINTERS,
        items=[_pointer(run_id, 0, 10), _pointer(run_id, 5, 15), _pointer(run_id, 20, 5)],
    )

    def presign(item: WorkItem) -> WorkResult:
        payload = PresignComputeLogsPayload.model_validate(item.payload)
        answer = PresignedComputeLogs(
            urls=[
                PresignedUrl(offset=p.offset, length=p.length, url=f"https://s3/{p.key}?sig")
                for p in payload.pointers
            ],
            expires_at=123.0,
        )
        return WorkResult(
            id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=answer.model_dump()
        )

    query = asyncio.create_task(
        api.user(URLS, id=run_id, step="a", stream="stdout", offset=0, timeout=20.0)
    )
    item = await _answer_presign(api, presign)
    assert item.location.name == "loc"
    urls = (await query)["computeLogUrls"]
    assert [(u["offset"], u["length"], u["skip"]) for u in urls["urls"]] == [
        (0, 10, 0),
        (5, 15, 5),
        (20, 5, 0),
    ]
    assert urls["urls"][0]["url"] == f"https://s3/{_pointer(run_id, 0, 10)['key']}?sig"
    assert (urls["expiresAt"], urls["hasMore"], urls["nextOffset"]) == (123.0, False, 25)


async def test_an_agent_refusal_or_silence_is_a_clear_error(api: Api) -> None:
    run_id = await _queued_run(api)
    await api.agent(POINTERS, items=[_pointer(run_id, 0, 10)])

    def refuse(item: WorkItem) -> WorkResult:
        return WorkResult(
            id=item.id,
            work_item_id=item.id,
            kind=item.kind,
            ok=False,
            error=ErrorInfo(cls_name="PermissionError", message="not this agent's bucket"),
        )

    query = asyncio.create_task(
        api.post(
            URLS,
            token=api.admin_token,
            id=run_id,
            step="a",
            stream="stdout",
            offset=0,
            timeout=20.0,
        )
    )
    await _answer_presign(api, refuse)
    (error,) = (await query)["errors"]
    assert error["extensions"]["code"] == "AGENT_ERROR"
    assert "not this agent's bucket" in error["message"]

    body = await api.post(
        URLS, token=api.admin_token, id=run_id, step="a", stream="stdout", offset=0, timeout=0.3
    )
    assert body["errors"][0]["extensions"]["code"] == "AGENT_TIMEOUT"
    body = await api.post(
        URLS, token=api.admin_token, id=run_id, step="a", stream="nope", offset=0, timeout=1.0
    )
    assert body["errors"][0]["extensions"]["code"] == BAD_INPUT


async def test_run_page_links_logs_in_customer_storage(api: Api) -> None:
    run_id = await _queued_run(api)
    await api.agent(POINTERS, items=[_pointer(run_id, 0, 10), _pointer(run_id, 10, 6)])
    chunk = LogChunk(run_id=run_id, step_key="b", stream=LogStream.STDERR, offset=0, data=b"oops")
    await api.agent(LOGS, items=[chunk.model_dump(mode="json")])
    api.client.headers["Authorization"] = f"Bearer {api.admin_token}"

    page = (await api.client.get(f"/runs/{run_id}")).text
    pane = page.split('id="logs"')[1]
    # The S3 stream is chosen first; the page asks for its links after loading.
    assert "a · stdout" in pane and "b · stderr" in pane
    assert "Stored in your bucket (s3://logs/, 2 objects)" in pane
    assert f'hx-get="/runs/{run_id}/logs/urls?step=a&amp;stream=stdout&offset=0"' in pane
    # A control-plane stream still shows its text inline.
    other = (await api.client.get(f"/runs/{run_id}/logs?step=b&stream=stderr")).text
    assert '<pre class="log" id="log-text" data-step="b" data-stream="stderr">oops' in other

    def presign(item: WorkItem) -> WorkResult:
        payload = PresignComputeLogsPayload.model_validate(item.payload)
        answer = PresignedComputeLogs(
            urls=[
                PresignedUrl(offset=p.offset, length=p.length, url=f"https://s3/{p.key}?a=1&b=2")
                for p in payload.pointers
            ],
            expires_at=2e9,
        )
        return WorkResult(
            id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=answer.model_dump()
        )

    links = asyncio.create_task(
        api.client.get(f"/runs/{run_id}/logs/urls?step=a&stream=stdout&offset=0")
    )
    await _answer_presign(api, presign)
    html = (await links).text
    url = f"https://s3/{_pointer(run_id, 10, 6)['key']}?a=1&amp;b=2"
    assert f'<a href="{url}" target="_blank" rel="noopener noreferrer">bytes 10–16</a>' in html
    assert 'data-urls="[{&#34;length&#34;: 10' in html
    # The pane is read by static/tether.js: the CSP allows no inline script.
    assert "<script" not in html

    def refuse(item: WorkItem) -> WorkResult:
        error = ErrorInfo(cls_name="LogStoreError", message="no S3 bucket configured")
        return WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=False, error=error)

    links = asyncio.create_task(
        api.client.get(f"/runs/{run_id}/logs/urls?step=a&stream=stdout&offset=0")
    )
    await _answer_presign(api, refuse)
    html = (await links).text
    assert "Could not get links to these logs" in html and "no S3 bucket configured" in html
    assert "Ask again" in html


async def test_only_http_urls_of_a_presign_answer_become_links(api: Api) -> None:
    run_id = await _queued_run(api)
    await api.agent(
        POINTERS,
        items=[_pointer(run_id, 0, 10), _pointer(run_id, 10, 6), _pointer(run_id, 16, 4)],
    )
    api.client.headers["Authorization"] = f"Bearer {api.admin_token}"
    hostile = ["javascript:alert(document.cookie)", "data:text/html,<b>x</b>", "https://s3/ok"]

    def presign(item: WorkItem) -> WorkResult:
        payload = PresignComputeLogsPayload.model_validate(item.payload)
        answer = PresignedComputeLogs(
            urls=[
                PresignedUrl(offset=p.offset, length=p.length, url=url)
                for p, url in zip(payload.pointers, hostile, strict=True)
            ],
            expires_at=2e9,
        )
        return WorkResult(
            id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=answer.model_dump()
        )

    links = asyncio.create_task(
        api.client.get(f"/runs/{run_id}/logs/urls?step=a&stream=stdout&offset=0")
    )
    await _answer_presign(api, presign)
    html = (await links).text
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["https://s3/ok"]
    # The others are shown as text, with a warning, and never handed to the script to read.
    assert html.count("not an http(s) URL: not linked or read") == 2
    assert "javascript:alert(document.cookie)</span>" in html
    (urls,) = re.findall(r'data-urls="([^"]*)"', html)
    assert "javascript" not in urls and "data:" not in urls and "https://s3/ok" in urls

"""The web UI's pages over the real ASGI app and a temp SQLite DB.

Data is created through the real GraphQL API (agent uploads, launchRun), then each page is
rendered through httpx as a browser would request it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from controlplane_testkit import EVENTS, LOGS, Api, example_snapshot
from sqlalchemy import event
from tether.controlplane.security import auth
from tether.shared.wire.agent import CodeServerStatus, Heartbeat
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import WorkResult

TEMPLATES = Path(__file__).parents[1] / "src/tether/controlplane/ui/templates"
HEARTBEAT = "mutation H($hb: JSON!) { heartbeat(heartbeat: $hb) }"


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


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, html
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """Sign in through the form, as a browser does (the client keeps the cookies)."""
    form = await client.get("/signin")
    return await client.post("/signin", data={"token": token, "csrf_token": csrf_of(form.text)})


async def store_events(api: Api, *events: RunEvent) -> None:
    await api.agent(EVENTS, items=[e.model_dump(mode="json") for e in events])


async def failed_run(api: Api) -> str:
    """A run of ``hello`` where op a succeeds and op b fails, with output on both streams."""
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    t = time.time()
    boom = ErrorInfo(
        cls_name="ValueError", message="boom: b failed", traceback='File "jobs.py", line 7\n'
    )
    await store_events(
        api,
        RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START, timestamp=t),
        RunEvent(run_id=run_id, seq=2, event_type=EventType.STEP_START, step_key="a", timestamp=t),
        RunEvent(
            run_id=run_id, seq=3, event_type=EventType.STEP_SUCCESS, step_key="a", timestamp=t + 1
        ),
        RunEvent(
            run_id=run_id, seq=4, event_type=EventType.STEP_START, step_key="b", timestamp=t + 1
        ),
        RunEvent(
            run_id=run_id,
            seq=5,
            event_type=EventType.STEP_FAILURE,
            step_key="b",
            timestamp=t + 2,
            error=boom,
        ),
        RunEvent(run_id=run_id, seq=6, event_type=EventType.RUN_FAILURE, timestamp=t + 2),
    )
    chunks = [
        LogChunk(run_id=run_id, step_key="a", stream=LogStream.STDOUT, offset=0, data=b"hello "),
        LogChunk(run_id=run_id, step_key="a", stream=LogStream.STDOUT, offset=6, data=b"<world>\n"),
        LogChunk(run_id=run_id, step_key="b", stream=LogStream.STDERR, offset=0, data=b"oops\n"),
    ]
    await api.agent(LOGS, items=[c.model_dump(mode="json") for c in chunks])
    return run_id


async def test_empty_states_of_every_page(api: Api) -> None:
    for path, empty in [
        ("/", "No agent has reported yet"),
        ("/runs", "No runs yet"),
        ("/locations", "loc"),
        ("/agents", "No agent has reported yet"),
    ]:
        resp = await api.client.get(path)
        assert resp.status_code == 200, (path, resp.text)
        assert empty in resp.text, path
        # Every page has the nav bar and only local assets.
        assert 'href="/runs"' in resp.text and 'src="/static/htmx.min.js"' in resp.text


async def test_assets_are_served_locally_and_no_template_names_an_internet_url(api: Api) -> None:
    resp = await api.client.get("/static/htmx.min.js")
    assert resp.status_code == 200
    assert resp.text.startswith("/*! htmx 2.")
    assert (await api.client.get("/static/tether.css")).status_code == 200
    for template in TEMPLATES.glob("*.html"):
        # The SVG namespace is an identifier, not a resource fetched from the internet.
        text = template.read_text().replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), template.name


async def test_run_page_shows_graph_timeline_error_events_and_logs(api: Api) -> None:
    run_id = await failed_run(api)
    resp = await api.client.get(f"/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    html = resp.text
    assert 'data-status="FAILURE"' in html
    # The op graph, coloured by step outcome, with its edge a -> b.
    assert re.search(r'class="dag-node state-success" data-op="a"', html)
    assert re.search(r'class="dag-node state-failure" data-op="b"', html)
    assert 'data-from="a" data-to="b"' in html
    # A node leads to its step's events and output.
    assert f'<a href="/runs/{run_id}?step=b#events">' in html
    # The Gantt chart: a bar per step.
    assert re.search(r'data-step="a">.*?class="gantt-bar state-success"', html, re.S)
    assert re.search(r'data-step="b">.*?class="gantt-bar state-failure"', html, re.S)
    # The failed step's error and traceback.
    assert "boom: b failed" in html and "File &#34;jobs.py&#34;, line 7" in html
    # Finished: nothing polls the live region any more.
    assert "every 2s" not in html.split('id="logs"')[0]
    # The runs table of finished runs only polls slowly (for new runs).
    table = (await api.client.get("/runs/table?status=FAILURE")).text
    assert 'hx-trigger="every 10s"' in table
    # Logs: a tab per (step, stream); the first chosen and escaped.
    assert "a · stdout" in html and "b · stderr" in html
    assert "hello &lt;world&gt;" in html


async def test_event_filters_by_type_and_step(api: Api) -> None:
    run_id = await failed_run(api)
    html = (await api.client.get(f"/runs/{run_id}/live?type=STEP_START")).text
    rows = re.findall(r'<tr class="event-(\w+)"', html)
    assert rows == ["step_start", "step_start"]
    html = (await api.client.get(f"/runs/{run_id}/live?step=b")).text
    assert re.findall(r'<tr class="event-(\w+)"', html) == ["step_start", "step_failure"]


async def test_log_tail_returns_only_new_output(api: Api) -> None:
    run_id = await failed_run(api)
    resp = await api.client.get(f"/runs/{run_id}/logs/tail?step=a&stream=stdout&offset=6")
    assert resp.status_code == 200
    assert '<div hx-swap-oob="beforeend:#log-text">&lt;world&gt;\n</div>' in resp.text
    # Nothing new: nothing appended.
    resp = await api.client.get(f"/runs/{run_id}/logs/tail?step=a&stream=stdout&offset=14")
    assert "beforeend" not in resp.text
    pane = (await api.client.get(f"/runs/{run_id}/logs?step=b&stream=stderr")).text
    assert "oops" in pane and "hello" not in pane
    # Without script, a tab is a link to the page with that stream chosen.
    assert f'href="/runs/{run_id}?log_step=b&log_stream=stderr#logs"' in pane
    page = (await api.client.get(f"/runs/{run_id}?log_step=b&log_stream=stderr")).text
    assert '<pre class="log" id="log-text" data-step="b" data-stream="stderr">oops' in page
    # Filtering events by a step shows that step's output too.
    page = (await api.client.get(f"/runs/{run_id}?step=b")).text
    assert 'data-step="b"' in page.split('id="logs"')[1]


async def test_live_run_keeps_polling_until_it_ends(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    html = (await api.client.get(f"/runs/{run_id}")).text
    assert 'data-status="QUEUED"' in html
    # The live region polls on from the newest event shown (the run's RUN_ENQUEUED).
    assert re.search(rf'hx-get="/runs/{run_id}/live\?after=\d+" hx-trigger="every 2s"', html)
    assert "No step has started yet." in html and "No output yet." in html
    table = (await api.client.get("/runs/table")).text
    assert 'hx-trigger="every 2s"' in table


def live_cursor(html: str, run_id: str) -> str:
    """The query of the live region's next refresh (``after=<newest event id shown>``)."""
    match = re.search(rf'hx-get="/runs/{run_id}/live\?([^"]*)" hx-trigger="every 2s"', html)
    assert match is not None, html
    return match.group(1).replace("&amp;", "&")


async def test_a_live_refresh_asks_only_for_the_new_events(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    t = time.time()
    step_events = [
        RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START, timestamp=t),
        RunEvent(run_id=run_id, seq=2, event_type=EventType.STEP_START, step_key="a", timestamp=t),
    ]
    logs = [
        RunEvent(
            run_id=run_id,
            seq=3 + i,
            event_type=EventType.LOG,
            step_key="a",
            message=f"old {i}",
            timestamp=t + i / 1000,
        )
        for i in range(50)
    ]
    await store_events(api, *step_events, *logs)
    page = (await api.client.get(f"/runs/{run_id}")).text
    assert page.count('<tr class="event-log"') == 50
    query = live_cursor(page, run_id)

    # What the run's events queries read: captured from the database engine itself.
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM run_events" in statement:
            statements.append((statement, params))

    engine = api.cp.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        # Nothing new: the refresh appends no row, though the run has 53 events.
        quiet = (await api.client.get(f"/runs/{run_id}/live?{query}")).text
        assert "<tr " not in quiet and "53 of 53" in quiet
        await store_events(
            api,
            RunEvent(run_id=run_id, seq=53, event_type=EventType.LOG, step_key="a", message="new"),
            RunEvent(
                run_id=run_id, seq=54, event_type=EventType.STEP_SUCCESS, step_key="a", message=""
            ),
        )
        fresh = (await api.client.get(f"/runs/{run_id}/live?{query}")).text
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    rows = re.findall(r'<tr class="event-(\w+)"', fresh)
    assert rows == ["log", "step_success"]
    assert ">new<" in fresh and "old 1<" not in fresh and "55 of 55" in fresh
    # The rows are appended to the page's event table, and the next refresh reads on from them.
    assert 'hx-swap-oob="beforeend:#event-rows"' in fresh
    assert live_cursor(fresh, run_id) != query
    # The step's success colours the graph (step events are read again, and only those).
    assert '<g class="dag-node state-success" data-op="a">' in fresh
    # Every read of whole rows of the run's events was narrowed: after the cursor, to the
    # step events, or to those with an error; none read the run's 50 log lines again.
    reads = [s for s, _ in statements if s.lstrip().upper().startswith("SELECT RUN_EVENTS.ID")]
    assert reads, statements
    for statement in reads:
        assert (
            "run_events.id >" in statement
            or "run_events.event_type IN" in statement
            or "run_events.error IS NOT NULL" in statement
        ), statement


async def test_runs_list_filters_and_pages(api: Api) -> None:
    run_id = await failed_run(api)
    for _ in range(25):
        await api.launch()
    first = (await api.client.get("/runs")).text
    assert first.count("<tr data-run=") == 25
    # The next page is asked after the last run shown (a keyset cursor), not at an offset.
    older = re.search(r'href="/runs\?after=([^"]+)">Older', first)
    assert older is not None and "offset=25" not in first
    second = (await api.client.get(f"/runs?after={older.group(1)}")).text
    assert second.count("<tr data-run=") == 1 and run_id in second
    assert "Older" not in second and "← Newest" in second
    # Its live refresh keeps the cursor.
    assert f'hx-get="/runs/table?after={older.group(1)}"' in second
    # Old links with an offset still work.
    by_offset = (await api.client.get("/runs?offset=25")).text
    assert by_offset.count("<tr data-run=") == 1 and run_id in by_offset
    bad_cursor = await api.client.get("/runs?after=nope")
    assert bad_cursor.status_code == 400 and "not a page cursor" in bad_cursor.text
    failed = (await api.client.get("/runs?status=FAILURE")).text
    assert failed.count("<tr data-run=") == 1 and run_id in failed
    none = (await api.client.get("/runs?job=nope")).text
    assert "No run matches these filters." in none
    bad = await api.client.get("/runs?status=BOGUS")
    assert bad.status_code == 400 and "unknown run status" in bad.text


async def test_job_page_draws_the_graph_and_prefills_the_launchpad(api: Api) -> None:
    await api.load()
    resp = await api.client.get("/locations/loc/jobs/hello")
    assert resp.status_code == 200, resp.text
    assert '<svg class="dag"' in resp.text and 'data-from="a" data-to="b"' in resp.text
    assert "Launchpad" in resp.text and "&#34;additionalProperties&#34;: false" in resp.text
    assert "Launch run" in resp.text and "ui-tests · admin" in resp.text
    missing = await api.client.get("/locations/loc/jobs/nope")
    assert missing.status_code == 404 and "has no job" in missing.text


async def test_launchpad_shows_problems_inline_and_redirects_to_the_run(api: Api) -> None:
    await api.load()
    url = "/locations/loc/jobs/hello/launch?repo=repo"
    bad_json = await api.client.post(url, data={"run_config": "{nope", "tags": ""})
    assert bad_json.status_code == 400 and "Run config is not valid JSON" in bad_json.text
    bad_cfg = await api.client.post(url, data={"run_config": '{"ops": {"a": {"n": "x"}}}'})
    assert bad_cfg.status_code == 422
    assert "run config of job &#39;hello&#39; is invalid" in bad_cfg.text
    assert "&#39;x&#39; is not of type &#39;integer&#39;" in bad_cfg.text
    # launchRun's verdict stays on the page (no re-validation on load replaces it).
    assert ", load" not in bad_cfg.text
    # What the user typed is kept.
    assert "{&#34;ops&#34;: {&#34;a&#34;: {&#34;n&#34;: &#34;x&#34;}}}" in bad_cfg.text
    checked = await api.client.post(
        "/locations/loc/jobs/hello/validate", data={"run_config": '{"ops": {"zz": {}}}'}
    )
    assert "Additional properties are not allowed" in checked.text
    ok = await api.client.post(
        url, data={"run_config": '{"ops": {"a": {"n": 3}}}', "tags": '{"who": "ui"}'}
    )
    assert ok.status_code == 303
    run_id = ok.headers["location"].removeprefix("/runs/")
    run = await api.run(run_id)
    assert run["runConfig"] == {"ops": {"a": {"n": 3}}} and run["tags"] == {"who": "ui"}


async def test_reexecute_launches_the_same_job_and_config(api: Api) -> None:
    run_id = await failed_run(api)
    resp = await api.client.post(f"/runs/{run_id}/reexecute")
    assert resp.status_code == 303
    new_id = resp.headers["location"].removeprefix("/runs/")
    assert new_id != run_id
    new = await api.run(new_id)
    assert new["jobName"] == "hello" and new["tags"]["tether/parent_run_id"] == run_id
    parent = await api.user("query($id: String!) { run(id: $id) { parentRunId } }", id=new_id)
    assert parent["run"]["parentRunId"] == run_id
    page = (await api.client.get(f"/runs/{new_id}")).text
    assert f'Re-execution of run <a class="mono" href="/runs/{run_id}">' in page


async def test_terminate_button_cancels_a_live_run(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    assert f'action="/runs/{run_id}/terminate"' in (await api.client.get(f"/runs/{run_id}")).text
    resp = await api.client.post(f"/runs/{run_id}/terminate")
    assert (resp.status_code, resp.headers["location"]) == (303, f"/runs/{run_id}")
    # Not yet handed to an agent: canceled on the spot, and nothing left to terminate.
    assert (await api.run(run_id))["status"] == "CANCELED"
    page = (await api.client.get(f"/runs/{run_id}")).text
    assert 'data-status="CANCELED"' in page and "/terminate" not in page
    missing = await api.client.post("/runs/nope/terminate")
    assert missing.status_code == 404 and "no run &#39;nope&#39;" in missing.text


async def test_runs_list_filters_by_tags(api: Api) -> None:
    await api.load()
    nightly = (await api.launch(tags={"team": "data", "cadence": "nightly"}))["run"]["id"]
    other = (await api.launch(tags={"team": "web"}))["run"]["id"]
    page = (await api.client.get("/runs", params={"tag": "team=data"})).text
    assert f'data-run="{nightly}"' in page and f'data-run="{other}"' not in page
    # Several pairs, comma-separated or repeated, must all match.
    both = await api.client.get("/runs", params=[("tag", "team=data, cadence=nightly")])
    assert f'data-run="{nightly}"' in both.text
    none = await api.client.get("/runs", params=[("tag", "team=data"), ("tag", "cadence=weekly")])
    assert f'data-run="{nightly}"' not in none.text and "No run matches" in none.text
    # Tags in the table link to this filter.
    assert 'href="/runs?tag=cadence%3Dnightly"' in page
    bad = await api.client.get("/runs", params={"tag": "no-equals-sign"})
    assert bad.status_code == 400 and "key=value" in bad.text


async def test_run_page_links_its_trace_when_a_backend_is_configured(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    trace_id = (await api.run(run_id))["traceId"]
    assert trace_id
    page = (await api.client.get(f"/runs/{run_id}")).text
    assert trace_id in page and "/trace/" not in page
    api.cp.settings.trace_url_template = "http://jaeger.local:16686/trace/{trace_id}"
    page = (await api.client.get(f"/runs/{run_id}")).text
    assert f'href="http://jaeger.local:16686/trace/{trace_id}"' in page


async def test_run_page_names_the_launcher_domain_that_launched_it(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    assert "launched by" not in (await api.client.get(f"/runs/{run_id}")).text
    (launch,) = [i for i in await api.claim() if i.kind == "launch_run"]
    owner = "process:host-b:boot-b:4026531836"
    await api.submit(
        WorkResult(
            id=launch.id,
            work_item_id=launch.id,
            kind=launch.kind,
            ok=True,
            payload={"run_id": run_id, "pid": 4242, "owner": owner},
        )
    )
    assert (await api.run(run_id))["launchedBy"] == owner
    page = (await api.client.get(f"/runs/{run_id}")).text
    assert f'launched by <span class="mono launched-by">{owner}</span>' in page


async def test_overview_agents_and_locations_with_load_error(api: Api) -> None:
    heartbeat = Heartbeat(
        agent_id="agent-7",
        services={"poller/host-1": "RUNNING", "logship/host-1": "DEGRADED"},
        queues={"WORK": 3},
        code_servers=[CodeServerStatus(location_name="loc", state="FAILED", error="exit 1")],
        errors=["logship: upload failed"],
    )
    await api.agent(HEARTBEAT, hb=heartbeat.model_dump(mode="json"))
    (item,) = [i for i in await api.claim() if i.kind == "load_location"]
    error = ErrorInfo(
        cls_name="ModuleNotFoundError", message="No module named 'jobs'", traceback="Traceback..."
    )
    await api.submit(
        WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=False, error=error)
    )
    overview = (await api.client.get("/")).text
    assert "agent-7" in overview and "ONLINE" in overview
    assert "LOAD_ERROR" in overview and "No module named &#39;jobs&#39;" in overview
    assert 'title="on agent agent-7: exit 1">FAILED</span>' in overview
    agents = (await api.client.get("/agents")).text
    assert "poller/host-1" in agents and "DEGRADED" in agents and "upload failed" in agents
    page = (await api.client.get("/locations/loc")).text
    assert "Load error" in page and "Traceback..." in page and "Reload definitions" in page
    reload = await api.client.post("/locations/loc/reload")
    assert reload.status_code == 303 and reload.headers["location"] == "/locations/loc"
    assert "LOADING" in (await api.client.get("/locations/loc")).text


async def test_location_page_lists_jobs(api: Api) -> None:
    await api.load(example_snapshot())
    page = (await api.client.get("/locations/loc")).text
    assert "Repository repo" in page and 'href="/locations/loc/jobs/hello?repo=repo"' in page


async def test_unknown_things_get_a_friendly_page(api: Api) -> None:
    for path in ("/runs/does-not-exist", "/locations/nowhere"):
        resp = await api.client.get(path)
        assert resp.status_code == 404
        assert "There is no" in resp.text and "Traceback" not in resp.text
    nowhere = await api.client.get("/no/such/page")
    assert nowhere.status_code == 404 and "There is no such page." in nowhere.text
    fragment = await api.client.get("/runs/nope/live", headers={"HX-Request": "true"})
    assert fragment.status_code == 404 and fragment.text.startswith('<div class="notice')


async def test_signing_in_starts_a_session_whose_cookie_never_holds_the_token(
    api: Api, admin_token: str
) -> None:
    del api.client.headers["Authorization"]
    signed_in = await sign_in(api.client, admin_token)
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith("tether_session=") and admin_token not in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=43200" in cookie
    page = await api.client.get("/runs")
    assert page.status_code == 200 and "Sign out" in page.text
    signed_out = await api.client.post("/signout", data={"csrf_token": csrf_of(page.text)})
    assert signed_out.status_code == 303
    assert signed_out.headers["set-cookie"].startswith("tether_session=; Max-Age=0")
    again = await api.client.get("/signin")
    empty = await api.client.post("/signin", data={"token": " ", "csrf_token": csrf_of(again.text)})
    assert empty.status_code == 400 and "Paste a token." in empty.text


async def test_a_raw_token_cookie_is_no_credential(api: Api, admin_token: str) -> None:
    # What the UI used to keep in its cookie: it authenticates nothing any more.
    del api.client.headers["Authorization"]
    page = await api.client.get("/runs", headers={"Cookie": f"tether_token={admin_token}"})
    assert page.status_code == 401 and 'href="/signin"' in page.text


async def test_a_long_log_opens_on_its_end(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    body = b"FIRST-LINE\n" + b"x" * (300 * 1024) + b"\nLAST-LINE\n"
    chunk = LogChunk(run_id=run_id, step_key="a", stream=LogStream.STDOUT, offset=0, data=body)
    await api.agent(LOGS, items=[chunk.model_dump(mode="json")])
    pane = (await api.client.get(f"/runs/{run_id}/logs?step=a&stream=stdout")).text
    assert "LAST-LINE" in pane and "FIRST-LINE" not in pane
    assert f"from byte {len(body) - 256 * 1024} on" in pane
    # The tail goes on from the end.
    assert f"offset={len(body)}" in pane


async def test_pages_act_with_the_senders_rights(api: Api) -> None:
    del api.client.headers["Authorization"]
    # No token (anonymous access is off outside `tether dev`): a sign-in link, no stack.
    resp = await api.client.get("/runs")
    assert resp.status_code == 401
    assert 'href="/signin"' in resp.text and "Traceback" not in resp.text
    refused = await sign_in(api.client, "tether_not-a-token")
    assert refused.status_code == 401 and "invalid API token" in refused.text
    assert "tether_session" not in refused.headers.get("set-cookie", "")
    agent = await sign_in(api.client, api.token)
    assert agent.status_code == 403 and "not an agent token" in agent.text
    # A viewer sees the job but the launchpad shows that it may not launch.
    await api.load()
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="ui-viewer", role=auth.Role.VIEWER)
    assert (await sign_in(api.client, viewer)).status_code == 303
    page = await api.client.get("/locations/loc/jobs/hello")
    assert page.status_code == 200 and "ui-viewer · viewer" in page.text
    assert "Launch run" not in page.text and "may not launch runs" in page.text
    launch = await api.client.post(
        "/locations/loc/jobs/hello/launch",
        data={"run_config": "{}", "csrf_token": csrf_of(page.text)},
    )
    assert launch.status_code == 403 and "Launchpad" in launch.text
    assert "not a viewer token" in launch.text
    assert (await api.client.get("/runs")).text.count("<tr data-run=") == 0


async def test_a_run_with_many_events_shows_the_newest(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    t = time.time()
    await store_events(
        api,
        *(
            RunEvent(
                run_id=run_id,
                seq=i,
                event_type=EventType.LOG,
                step_key="a",
                message=f"line {i}",
                timestamp=t + i / 1000,
            )
            for i in range(1, 601)
        ),
    )
    html = (await api.client.get(f"/runs/{run_id}")).text
    assert "601 of 601, the last 500 shown" in html
    assert "line 600<" in html and "line 100<" not in html
    assert html.count('<tr class="event-log"') == 500

"""launchRun validates against the stored snapshot and queues run, event and work in one go."""

from __future__ import annotations

from typing import Any

from controlplane_testkit import LAUNCH, Api
from test_graphql_limits import serving
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.work import LaunchRunPayload, WorkKind

RUNS = "query($job: String, $status: RunStatus) { runs(jobName: $job, status: $status) { id } }"


async def test_launch_before_the_location_loaded(api: Api) -> None:
    result = await api.launch()
    assert result["__typename"] == "LocationNotLoadedError"
    assert "not loaded" in result["message"]
    result = await api.user(
        'mutation { launchRun(locationName: "nope", jobName: "x") '
        "{ ... on LocationNotLoadedError { message } } }"
    )
    assert result["launchRun"]["message"] == "no code location named 'nope'"


async def test_invalid_config_and_unknown_jobs_are_refused_and_create_nothing(api: Api) -> None:
    await api.load()
    invalid = await api.launch(cfg={"ops": {"nope": {}, "a": {"n": "three"}}})
    assert invalid["__typename"] == "RunConfigValidationInvalid"
    assert invalid["errors"] == [
        "ops: Additional properties are not allowed ('nope' was unexpected)",
        "ops.a.n: 'three' is not of type 'integer'",
    ]
    assert (await api.launch(cfg=[1, 2]))["__typename"] == "RunConfigValidationInvalid"
    unknown = await api.launch("no_such_job")
    assert unknown["__typename"] == "JobNotFoundError"
    assert "no_such_job" in unknown["message"]
    bad_tags = (
        'mutation { launchRun(locationName: "loc", jobName: "hello", tags: {a: 1}) { __typename } }'
    )
    body = await api.post(bad_tags, token=api.admin_token)
    assert "tags must be a JSON object of string values" in body["errors"][0]["message"]
    nul = await api.post(LAUNCH, token=api.admin_token, loc="loc", job="hello", tags={"a": "\x00"})
    assert "tags must not contain NUL" in nul["errors"][0]["message"]
    assert (await api.user(RUNS))["runs"] == []
    assert await api.claim() == []


async def test_launch_queues_run_event_and_work_item_in_one_trace(api: Api) -> None:
    await api.load()
    result = await api.launch(cfg={"ops": {"a": {"n": 3}}}, tags={"team": "data"})
    assert result["__typename"] == "LaunchRunSuccess"
    run = result["run"]
    assert run["status"] == "QUEUED"
    assert run["traceparent"] and run["traceId"] == run["traceparent"].split("-")[1]

    (item,) = await api.claim()
    assert item.kind == WorkKind.LAUNCH_RUN
    assert item.traceparent == run["traceparent"]
    payload = LaunchRunPayload.model_validate(item.payload)
    assert payload.run_id == run["id"]
    assert payload.run_config == {"ops": {"a": {"n": 3}}}
    assert payload.tags == {"team": "data"}
    assert payload.repository_name == "repo"

    full = await api.run(run["id"])
    assert [e["eventType"] for e in full["events"]] == ["RUN_ENQUEUED"]
    assert full["tags"] == {"team": "data"}
    assert [r["id"] for r in (await api.user(RUNS, job="hello"))["runs"]] == [run["id"]]
    assert (await api.user(RUNS, status="SUCCESS"))["runs"] == []


async def test_runs_are_listed_newest_first_with_paging(api: Api) -> None:
    await api.load()
    ids = [(await api.launch())["run"]["id"] for _ in range(3)]
    listed = (await api.user("{ runs { id } }"))["runs"]
    assert [r["id"] for r in listed] == ids[::-1]
    page = (await api.user("{ runs(limit: 1, offset: 1) { id } }"))["runs"]
    assert [r["id"] for r in page] == [ids[1]]
    assert (await api.user('{ run(id: "nope") { id } }'))["run"] is None


async def test_graphql_errors_are_messages_not_tracebacks(api: Api) -> None:
    body = await api.post("{ runs { nope } }", token=api.admin_token)
    assert "Cannot query field 'nope'" in body["errors"][0]["message"]
    body = await api.post("{ runs(limit: 5000) { id } }", token=api.admin_token)
    assert "limit must be within" in body["errors"][0]["message"]
    resp = await api.client.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert "Traceback" not in resp.text


async def test_health(api: Api) -> None:
    # GraphiQL is off unless enabled (see test_graphql_limits).
    resp = await api.client.get("/graphql", headers={"accept": "text/html"})
    assert resp.status_code == 404
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}


async def test_unexpected_failures_are_masked(api: Api) -> None:
    from sqlalchemy import text

    # Fault injection: the agents table disappears under the running control plane.
    async with api.cp.db.transaction() as session:
        await session.execute(text("DROP TABLE agents"))
    body = await api.post("{ agents { agentId } }", token=api.admin_token)
    (error,) = body["errors"]
    assert error["message"] == "internal error in the control plane; see its log"
    assert "agents" not in error["message"] and "Traceback" not in str(body)


async def test_runs_filter_by_tags_and_creation_time(api: Api) -> None:
    await api.load()
    data = (await api.launch(tags={"team": "data", "env": "prod"}))["run"]
    ml = (await api.launch(tags={"team": "ml", "env": "prod"}))["run"]
    untagged = (await api.launch())["run"]
    query = """query($tags: JSON, $after: Float, $before: Float) {
      runs(tags: $tags, createdAfter: $after, createdBefore: $before) { id createdAt } }"""

    async def ids(**variables: Any) -> list[str]:
        return [r["id"] for r in (await api.user(query, **variables))["runs"]]

    assert await ids(tags={"env": "prod"}) == [ml["id"], data["id"]]
    assert await ids(tags={"env": "prod", "team": "data"}) == [data["id"]]
    assert await ids(tags={"team": "nobody"}) == []
    assert await ids(tags={}) == [untagged["id"], ml["id"], data["id"]]
    created = {r["id"]: r["createdAt"] for r in (await api.user(query))["runs"]}
    assert await ids(after=created[data["id"]]) == [untagged["id"], ml["id"]]
    assert await ids(before=created[untagged["id"]], tags={"team": "ml"}) == [ml["id"]]
    body = await api.post(query, token=api.admin_token, tags={"team": 3})
    assert "tags must be a JSON object of string values" in body["errors"][0]["message"]


async def test_a_launch_too_big_for_a_nats_message_is_refused(
    settings: ControlPlaneSettings,
) -> None:
    # A run with a 2 MB tag was once accepted, and stayed QUEUED for ever: its launch
    # work item could never be published on the agent's NATS (max_payload 1 MB).
    async with serving(settings) as api:
        await api.load()
        body = await api.post(
            LAUNCH, token=api.admin_token, loc="loc", job="hello", tags={"big": "x" * 2_000_000}
        )
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_INPUT"
        assert "tags is 2,000,010 bytes of JSON, over the limit of 65,536" in error["message"]
        assert "TETHER_CONTROLPLANE_RUN_TAGS_MAX_BYTES" in error["message"]
        body = await api.post(
            LAUNCH,
            token=api.admin_token,
            loc="loc",
            job="hello",
            cfg={"ops": {"a": {"n": 1}}},
            tags={"t": "x" * 1000},
        )
        assert body["data"]["launchRun"]["__typename"] == "LaunchRunSuccess"
        assert len((await api.user("{ runs { id } }"))["runs"]) == 1
    # Within the per-field limits, the whole item must still fit one NATS message.
    async with serving(settings, run_tags_max_bytes=2_000_000) as api:
        outcome = await api.launch(tags={"big": "x" * 1_000_000})
        assert outcome["__typename"] == "RunConfigValidationInvalid"
        assert "over the 786,432 a NATS message holds with headroom" in outcome["message"]
        assert len((await api.user("{ runs { id } }"))["runs"]) == 1  # only the first one

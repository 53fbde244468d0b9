"""Helpers of the control plane tests: the agent API's operations, a client, a snapshot,
and a real HTTP server (:func:`serving`) that CLI commands run against."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import typer
from tether.controlplane.core import ControlPlane
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT
from tether.controlplane.security import auth
from tether.controlplane.service import ControlPlaneService
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.snapshots import (
    Edge,
    InstigatorStatus,
    JobSnapshot,
    LocationSnapshot,
    OpInput,
    OpOutput,
    OpSnapshot,
    PartitionSetSnapshot,
    PartitionsKind,
    PartitionsSnapshot,
    RepositorySnapshot,
    ScheduleSnapshot,
    SensorSnapshot,
)
from tether.shared.wire.work import WorkItem, WorkResult
from typer.testing import CliRunner, Result

CLAIM = """
mutation Claim($agentId: String!, $substrates: [String!]!, $max: Int!, $waitMs: Int!,
               $leaseSeconds: Float!, $queues: [String!]) {
  claimWork(agentId: $agentId, substrates: $substrates, max: $max, waitMs: $waitMs,
            leaseSeconds: $leaseSeconds, queues: $queues)
}"""
ACK = "mutation Ack($agentId: String!, $ids: [String!]!) { ackWork(agentId: $agentId, ids: $ids) }"
EVENTS = "mutation E($items: [JSON!]!) { storeEvents(events: $items) { stored duplicates } }"
RESULTS = "mutation R($items: [JSON!]!) { submitResults(results: $items) { stored duplicates } }"
LOGS = "mutation L($items: [JSON!]!) { appendComputeLogs(chunks: $items) { stored duplicates } }"
#: The uploads again, with the items refused on their own.
_REFUSED = "{ stored duplicates refused { index reason id } }"
EVENTS_OUTCOME = f"mutation E($items: [JSON!]!) {{ storeEvents(events: $items) {_REFUSED} }}"
RESULTS_OUTCOME = f"mutation R($items: [JSON!]!) {{ submitResults(results: $items) {_REFUSED} }}"
LOGS_OUTCOME = f"mutation L($items: [JSON!]!) {{ appendComputeLogs(chunks: $items) {_REFUSED} }}"
POINTERS_OUTCOME = (
    f"mutation P($items: [JSON!]!) {{ appendComputeLogPointers(pointers: $items) {_REFUSED} }}"
)
LAUNCH = """
mutation($loc: String!, $job: String!, $cfg: JSON, $tags: JSON) {
  launchRun(locationName: $loc, jobName: $job, runConfig: $cfg, tags: $tags) {
    __typename
    ... on LaunchRunSuccess { run { id status traceparent traceId } }
    ... on RunConfigValidationInvalid { message errors }
    ... on JobNotFoundError { message }
    ... on LocationNotLoadedError { message }
  }
}"""
RUN = """
query($id: String!) {
  run(id: $id) {
    id status jobName locationName runConfig tags createdAt startedAt endedAt traceparent traceId
    launchedBy
    events { id seq eventType timestamp stepKey message data error { clsName message traceback } }
  }
}"""

WORKSPACE = """
[[locations]]
name = "loc"
module = "jobs"
working_directory = "code"

[[locations]]
name = "boxed"
module = "boxed_jobs"
substrate = "docker"
"""


def example_snapshot(location_name: str = "loc", description: str = "") -> LocationSnapshot:
    """A location with job ``hello`` (ops a -> b) whose run config schema allows ops.a.n."""
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ops": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "a": {
                        "type": "object",
                        "properties": {"n": {"type": "integer"}},
                        "additionalProperties": False,
                    }
                },
            }
        },
    }
    job = JobSnapshot(
        name="hello",
        description=description,
        ops=[
            OpSnapshot(name="a", outputs=[OpOutput(name="result", type_name="int")]),
            OpSnapshot(name="b", inputs=[OpInput(name="x", type_name="int")]),
        ],
        edges=[Edge(from_op="a", from_output="result", to_op="b", to_input="x")],
        config_schema=schema,
    )
    return LocationSnapshot(
        location_name=location_name,
        repositories=[RepositorySnapshot(name="repo", jobs=[job])],
    )


def snapshot_with_instigators() -> LocationSnapshot:
    """example_snapshot() with schedules, sensors and a static partition set of ``hello``."""
    base = example_snapshot()
    repo = base.repositories[0]
    job = repo.jobs[0].model_copy(update={"partition_set_name": "hello_partitions"})
    repo = repo.model_copy(
        update={
            "jobs": [job],
            "schedules": [
                ScheduleSnapshot(
                    name="hourly",
                    cron_schedule="0 * * * *",
                    job_names=["hello"],
                    default_status=InstigatorStatus.RUNNING,
                ),
                ScheduleSnapshot(name="off", cron_schedule="* * * * *", job_names=["hello"]),
            ],
            "sensors": [
                SensorSnapshot(
                    name="watcher",
                    job_names=["hello"],
                    minimum_interval_seconds=30,
                    default_status=InstigatorStatus.RUNNING,
                ),
                SensorSnapshot(
                    name="slow",
                    job_names=["hello"],
                    minimum_interval_seconds=30,
                    default_status=InstigatorStatus.RUNNING,
                ),
            ],
            "partition_sets": [
                PartitionSetSnapshot(
                    name="hello_partitions",
                    job_name="hello",
                    partitions=PartitionsSnapshot(
                        kind=PartitionsKind.STATIC, static_keys=["a", "b", "c"]
                    ),
                )
            ],
        }
    )
    return base.model_copy(update={"repositories": [repo]})


@dataclass
class Api:
    """A GraphQL client of one control plane, as an agent (with its token) or a user.

    Attributes:
        client: httpx client of the app.
        cp: the control plane.
        token: the dev agent token (of the default deployment).
        admin_token: an admin token of the default deployment, used by :meth:`user`.
    """

    client: httpx.AsyncClient
    cp: ControlPlane
    token: str
    admin_token: str

    async def post(self, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
        """POST one operation; return the whole response body."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        return resp.json()

    async def user(self, query: str, **variables: Any) -> dict[str, Any]:
        """Run a user operation (with the admin token) that must succeed; return its data."""
        body = await self.post(query, token=self.admin_token, **variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def agent(self, query: str, **variables: Any) -> dict[str, Any]:
        """Run an agent operation (with the agent token) that must succeed; return its data."""
        body = await self.post(query, token=self.token, **variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def claim(
        self,
        substrates: list[str] | None = None,
        *,
        agent_id: str = "agent-1",
        max_items: int = 10,
        wait_ms: int = 0,
        lease_s: float = 60.0,
        queues: list[str] | None = None,
    ) -> list[WorkItem]:
        """claimWork, parsed into WorkItems (``queues`` None: the default queue)."""
        data = await self.agent(
            CLAIM,
            agentId=agent_id,
            substrates=substrates or ["process"],
            max=max_items,
            waitMs=wait_ms,
            leaseSeconds=lease_s,
            queues=queues,
        )
        return [WorkItem.model_validate(item) for item in data["claimWork"]]

    async def submit(self, *results: WorkResult) -> dict[str, int]:
        """submitResults; return {stored, duplicates}."""
        items = [r.model_dump(mode="json") for r in results]
        return (await self.agent(RESULTS, items=items))["submitResults"]

    async def load(self, snapshot: LocationSnapshot | None = None) -> WorkItem:
        """Answer the pending load of location ``loc`` with ``snapshot``; return its item."""
        (item,) = [i for i in await self.claim() if i.kind == "load_location"]
        snapshot = snapshot or example_snapshot()
        await self.submit(
            WorkResult(
                id=item.id,
                work_item_id=item.id,
                kind=item.kind,
                ok=True,
                payload={"snapshot": snapshot.model_dump(mode="json")},
            )
        )
        return item

    async def launch(self, job: str = "hello", cfg: Any = None, **kw: Any) -> dict[str, Any]:
        """launchRun on location ``loc``; return the union member as a dict."""
        return (await self.user(LAUNCH, loc="loc", job=job, cfg=cfg, **kw))["launchRun"]

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run query."""
        return (await self.user(RUN, id=run_id))["run"]


class Clock:
    """Real time plus however far a test moved it forward (work items stay claimable)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.skew += seconds


@dataclass
class Served:
    """A control plane serving HTTP on a free loopback port, from :func:`serving`.

    Attributes:
        service: the running service.
        cp: its open control plane.
        url: its base URL, ``http://<host>:<port>``.
    """

    service: ControlPlaneService
    cp: ControlPlane
    url: str

    @property
    def agent_token(self) -> str:
        """The dev agent token, which the control plane wrote to ``agent_token_file``."""
        path = self.service.settings.agent_token_file
        if path is None:
            raise ValueError("these settings name no agent_token_file")
        return path.read_text().strip()

    async def token(
        self, name: str, role: auth.Role, *, deployment_id: str = DEFAULT_DEPLOYMENT
    ) -> str:
        """A new API token ``name`` of ``role`` in ``deployment_id``."""
        async with self.cp.db.transaction() as session:
            return await auth.create_token(
                session, name=name, role=role, deployment_id=deployment_id
            )

    async def cli(
        self,
        app: typer.Typer,
        *args: str,
        token: str | None,
        env: Mapping[str, str | None] | None = None,
    ) -> Result:
        """Invoke the command line ``app`` with ``args`` against this server.

        Args:
            app: the typer app (``tether.client.run_cli.app``, ...).
            args: its arguments.
            token: ``TETHER_TOKEN`` (None: unset).
            env: more environment variables, over the URL and token (None unsets one).
        """
        full = {"TETHER_CONTROL_PLANE_URL": self.url, "TETHER_TOKEN": token, **(env or {})}
        # In a thread: the CLI's blocking HTTP calls reach the server on this event loop.
        return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=full)


@contextlib.asynccontextmanager
async def serving(
    settings: ControlPlaneSettings, *, daemons: bool = False, timeout_s: float = 30.0
) -> AsyncIterator[Served]:
    """Serve ``settings``' control plane on a free port until the block ends, then shut it
    down and wait for it.

    Args:
        settings: the control plane's settings (``port`` is replaced by 0).
        daemons: run the daemons inside the service (off: only the requests of the test
            change anything; the run monitor follows ``settings.run_monitor``).
        timeout_s: how long it may take to start listening, and to stop.
    """
    settings = settings.model_copy(update={"port": 0, "daemons": daemons})
    service = ControlPlaneService(settings, announce=lambda host, port: None)
    task = asyncio.create_task(service.run(), name="control-plane")
    try:
        listening = asyncio.create_task(service.listening.wait())
        await asyncio.wait(
            {task, listening}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        listening.cancel()
        if task.done():
            task.result()  # its error, if it failed to start
            raise AssertionError("the control plane stopped before it listened")
        if not service.listening.is_set():
            raise TimeoutError(f"the control plane did not listen within {timeout_s} s")
        assert service.address is not None and service.control_plane is not None
        url = "http://{}:{}".format(*service.address)
        yield Served(service=service, cp=service.control_plane, url=url)
    finally:
        service.shutdown()
        await asyncio.wait_for(task, timeout_s)

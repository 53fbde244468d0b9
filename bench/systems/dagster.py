"""Dagster OSS: ``dagster dev`` (webserver + daemon) with the queued run coordinator and the
default run launcher, in its own venv, driven through its GraphQL API."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import httpx
from tether.testing import free_port

from bench.envs import Env
from bench.processes import Group
from bench.systems.base import (
    ASSET_GRAPH,
    ASSET_SOLO,
    FAILURE,
    PENDING,
    SUCCESS,
    TWO_OPS,
    BenchError,
    Workspace,
    wait_until,
)
from bench.systems.tether import JOBS_DIR

#: Seconds between the daemon's dequeues of queued runs (default 5 s; tuned to 1 s here).
DEQUEUE_INTERVAL_S = 1
#: QueuedRunCoordinator's limit of runs in progress (10 is Dagster's default).
MAX_CONCURRENT_RUNS = 10

_DAGSTER_YAML = f"""\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: {DEQUEUE_INTERVAL_S}
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
telemetry:
  enabled: false
"""

_LAUNCH = """mutation($p: ExecutionParams!) {
  launchRun(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


#: ``dagster dev -f`` names each code location after its file.
JOBS_LOCATION = "dagster_jobs.py"
CATALOG_LOCATION = "dagster_catalog.py"

_RELOAD = """mutation($n: String!) {
  reloadRepositoryLocation(repositoryLocationName: $n) {
    __typename
    ... on WorkspaceLocationEntry { loadStatus locationOrLoadError { __typename
      ... on PythonError { message } } }
    ... on PythonError { message }
  }
}"""

#: The catalog query: the same facts of each asset as Tether's (bench/systems/tether.py).
CATALOG_QUERY = """{ assetNodes { id assetKey { path } groupName description jobNames opNames
  dependencyKeys { path } dependedByKeys { path }
  assetMaterializations(limit: 1) { timestamp runId } } }"""


class DagsterSystem:
    """``dagster dev`` on SQLite storage under a temp DAGSTER_HOME.

    Args:
        env: the Dagster venv.
        workspace: state directory and bench environment.
        multiprocess: run ``two_ops_mp`` (default multiprocess executor, one process per op)
            instead of ``two_ops`` (in-process executor).
    """

    def __init__(self, env: Env, workspace: Workspace, *, multiprocess: bool) -> None:
        self.name = "dagster-mp" if multiprocess else "dagster"
        self._env = env
        self._workspace = workspace
        self._job_suffix = "_mp" if multiprocess else ""
        self._port = free_port()
        self._home = workspace.root / "dagster-home"
        self._group: Group | None = None
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self._port}", timeout=60)
        self._selector: dict[str, str] = {}
        self._log_cursor: dict[str, tuple[str | None, int]] = {}
        self._stdout_cursor: dict[str, tuple[str | None, str | None, int]] = {}
        self.settings = {
            "run coordinator": f"Queued, dequeue every {DEQUEUE_INTERVAL_S}s, "
            f"max {MAX_CONCURRENT_RUNS} concurrent",
            "executor": "multiprocess (default)" if multiprocess else "in_process",
            "storage": "SQLite (DAGSTER_HOME)",
            "scheduler": "daemon wakes at each minute boundary (fixed, no setting), "
            "then the queued run waits for a dequeue",
        }

    def _gql(self, query: str, **variables: Any) -> dict[str, Any]:
        resp = self._http.post("/graphql", json={"query": query, "variables": variables})
        body = resp.json()
        if body.get("errors"):
            raise BenchError(f"dagster GraphQL error: {body['errors']}")
        return body["data"]

    def start(self) -> None:
        """Write dagster.yaml, start ``dagster dev``, wait for the repository to load."""
        self._home.mkdir(parents=True, exist_ok=True)
        (self._home / "dagster.yaml").write_text(_DAGSTER_YAML)
        env = {
            **os.environ,
            **self._workspace.bench_env(),
            "DAGSTER_HOME": str(self._home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "VIRTUAL_ENV": str(self._env.root),
            "PATH": f"{self._env.root / 'bin'}:{os.environ.get('PATH', '')}",
        }
        # The asset catalog is its own code location, loaded only for the asset workload.
        catalog = ["-f", CATALOG_LOCATION] if self._workspace.catalog_assets else []
        self._group = Group(
            "dagster",
            [
                str(self._env.bin("dagster")),
                "dev",
                "-f",
                JOBS_LOCATION,
                *catalog,
                "-h",
                "127.0.0.1",
                "-p",
                str(self._port),
            ],
            env=env,
            cwd=JOBS_DIR,
            log_path=self._workspace.root / "dagster.log",
        )

        def loaded() -> bool:
            if self._group is not None and self._group.proc.poll() is not None:
                raise BenchError(f"dagster dev exited:\n{self._group.tail()}")
            try:
                data = self._gql(
                    "{ repositoriesOrError { __typename ... on RepositoryConnection "
                    "{ nodes { name location { name } } } } }"
                )
            except (httpx.HTTPError, ValueError):
                return False
            nodes = data["repositoriesOrError"].get("nodes") or []
            by_location = {n["location"]["name"]: n for n in nodes}
            wanted = [JOBS_LOCATION] + ([CATALOG_LOCATION] if catalog else [])
            if any(name not in by_location for name in wanted):
                return False
            self._selector = {
                "repositoryLocationName": JOBS_LOCATION,
                "repositoryName": by_location[JOBS_LOCATION]["name"],
            }
            return True

        wait_until("dagster dev to load the bench jobs", loaded, timeout=180, interval=0.5)

    def stop(self) -> None:
        """Stop ``dagster dev`` (webserver, daemon, code server and any run processes)."""
        self._http.close()
        if self._group is not None:
            self._group.stop()

    def roots(self) -> list[int]:
        """The ``dagster dev`` process tree."""
        return [self._group.pid] if self._group is not None else []

    def submit(self, job: str) -> str:
        """launchRun (queued by the coordinator)."""
        name = job + self._job_suffix if job == TWO_OPS else job
        params = {"selector": {**self._selector, "jobName": name}, "runConfigData": {}}
        result = self._gql(_LAUNCH, p=params)["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise BenchError(f"dagster launchRun({name}) -> {result}")
        return str(result["run"]["runId"])

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Run states from ``runsOrError``."""
        ids = list(run_ids)
        data = self._gql(
            "query($ids: [String!]) { runsOrError(filter: {runIds: $ids}) { __typename "
            "... on Runs { results { runId status } } } }",
            ids=ids,
        )
        found = {r["runId"]: _normalize(r["status"]) for r in data["runsOrError"]["results"]}
        return {rid: found.get(rid, PENDING) for rid in ids}

    def count_log_events(self, run_id: str) -> int:
        """context.log messages of the run stored in the event log (read by cursor)."""
        cursor, count = self._log_cursor.get(run_id, (None, 0))
        while True:
            data = self._gql(
                "query($id: ID!, $c: String) { logsForRun(runId: $id, afterCursor: $c, "
                "limit: 20000) { __typename ... on EventConnection { events { __typename } "
                "cursor hasMore } } }",
                id=run_id,
                c=cursor,
            )["logsForRun"]
            events = data.get("events") or []
            count += sum(1 for e in events if e["__typename"] == "LogMessageEvent")
            cursor = data.get("cursor") or cursor
            if not data.get("hasMore"):
                break
        self._log_cursor[run_id] = (cursor, count)
        return count

    def read_stdout_bytes(self, run_id: str) -> int:
        """Bytes of the run's stdout read so far through ``capturedLogs`` (incrementally).

        Dagster's compute log manager captures the run's output under the log key of its
        ``LogsCapturedEvent`` (``[run id, "compute_logs", file key]``); each call reads what
        was added since the last, up to 4 MB per query, as the UI's log viewer does.
        """
        key, cursor, got = self._stdout_cursor.get(run_id, (None, None, 0))
        if key is None:
            data = self._gql(
                "query($id: ID!) { logsForRun(runId: $id, limit: 20000) { __typename "
                "... on EventConnection { events { __typename "
                "... on LogsCapturedEvent { fileKey } } } } }",
                id=run_id,
            )["logsForRun"]
            keys = [e["fileKey"] for e in data.get("events") or [] if e.get("fileKey")]
            if not keys:
                return 0
            key = keys[0]
        while True:
            logs = self._gql(
                "query($k: [String!]!, $c: String, $l: Int) { capturedLogs(logKey: $k, "
                "cursor: $c, limit: $l) { stdout cursor } }",
                k=[run_id, "compute_logs", key],
                c=cursor,
                l=4 << 20,
            )["capturedLogs"]
            chunk = (logs.get("stdout") or "").encode()
            got += len(chunk)
            cursor = logs.get("cursor") or cursor
            if len(chunk) < 4 << 20:
                break
        self._stdout_cursor[run_id] = (key, cursor, got)
        return got

    def materialize(self, graph: str) -> str:
        """launchRun of the graph's asset job (``asset_graph`` / ``asset_solo``: every asset
        of the graph; in-process, or ``_mp`` for dagster-mp)."""
        if graph not in (ASSET_GRAPH, ASSET_SOLO):
            raise ValueError(f"unknown asset graph {graph!r}")
        return self.submit(graph + self._job_suffix)

    def materialized_by(self, run_id: str, group: str) -> int:
        """Assets of ``group`` whose latest materialization is the run's."""
        nodes = self._gql(
            "query($g: AssetGroupSelector) { assetNodes(group: $g) "
            "{ assetMaterializations(limit: 1) { runId } } }",
            g={**self._selector, "groupName": group},
        )["assetNodes"]
        return sum(
            1
            for n in nodes
            if n["assetMaterializations"] and n["assetMaterializations"][0]["runId"] == run_id
        )

    def load_catalog(self, round_: int, timeout: float) -> None:
        """``reloadRepositoryLocation`` of the catalog location (the UI's reload): the
        webserver starts a new code server for the location, which imports the module, and
        fetches the new snapshot before it answers."""
        result = self._gql(_RELOAD, n=CATALOG_LOCATION)["reloadRepositoryLocation"]
        if result["__typename"] != "WorkspaceLocationEntry" or result["loadStatus"] != "LOADED":
            raise BenchError(f"dagster reloadRepositoryLocation -> {result}")
        loaded = result["locationOrLoadError"] or {}
        if loaded.get("__typename") != "RepositoryLocation":
            raise BenchError(f"dagster catalog location failed to load: {loaded}")

    def catalog_nodes(self) -> int:
        """Run the catalog query (every asset of every location); how many nodes it gave."""
        return len(self._gql(CATALOG_QUERY)["assetNodes"])

    def stages(self, run_id: str) -> dict[str, float]:
        """Epoch time of the run's first lifecycle events, under Tether's event names."""
        data = self._gql(
            "query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection "
            "{ events { __typename ... on MessageEvent { timestamp } } } } }",
            id=run_id,
        )["logsForRun"]
        first: dict[str, float] = {}
        for event in data.get("events") or []:
            name = _STAGE_OF.get(event["__typename"])
            if name is not None and event.get("timestamp"):
                first.setdefault(name, int(event["timestamp"]) / 1000)
        return first

    def log_tail(self, lines: int = 30) -> str:
        """Recent output of ``dagster dev``."""
        return self._group.tail(lines) if self._group is not None else ""


#: Dagster event types that mark the same milestones as Tether's run events.
_STAGE_OF = {
    "RunEnqueuedEvent": "RUN_ENQUEUED",
    "RunStartingEvent": "RUN_STARTING",
    "RunStartEvent": "RUN_START",
    "ExecutionStepStartEvent": "STEP_START",
    "RunSuccessEvent": "RUN_SUCCESS",
}


def _normalize(status: str) -> str:
    if status == "SUCCESS":
        return SUCCESS
    if status in ("FAILURE", "CANCELED"):
        return FAILURE
    return PENDING

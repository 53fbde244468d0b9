"""Tether: the local stack of ``tether dev`` (DevStack), driven through its GraphQL API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from tether.shared.wire.runs import EventType
from tether.testing import free_port

from bench.jobs.asset_graph import CATALOG_ENV
from bench.systems.base import (
    FAILURE,
    PENDING,
    SUCCESS,
    BenchError,
    Workspace,
    graph_keys,
    wait_until,
)
from tether.dev.stack import DevStack, StackConfig

JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"
LOCATION = "bench"
#: The asset catalog's location (added through the API by the asset workload).
CATALOG_LOCATION = "bench_catalog"
#: Seconds between ``codeLocations`` polls while a location loads.
LOAD_POLL_S = 0.25
#: Environment value changed on each fresh load of the catalog (read by nothing).
CATALOG_ROUND_ENV = "BENCH_CATALOG_ROUND"
#: Up to this many runs, ``statuses`` asks for each by id instead of paging ``runs``.
_BY_ID_MAX = 10
#: Environment variable of the launcher choosing cold (0) or warm (1) run starts.
WARM_START_ENV = "TETHER_LAUNCHER_WARM_START"
#: How often the control plane's scheduler daemon checks for due ticks (default 1.0 s).
DAEMON_INTERVAL_ENV = "TETHER_CONTROLPLANE_DAEMON_INTERVAL_S"

_LAUNCH = """mutation($job: String!, $tags: JSON) {
  launchRun(locationName: "bench", jobName: $job, tags: $tags) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on RunConfigValidationInvalid { message }
    ... on JobNotFoundError { message }
    ... on LocationNotLoadedError { message }
  }
}"""


_MATERIALIZE = """mutation($keys: [[String!]!]!) {
  materializeAssets(locationName: "bench", assetKeys: $keys) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on RunConfigValidationInvalid { message }
    ... on JobNotFoundError { message }
    ... on LocationNotLoadedError { message }
  }
}"""

#: The catalog query: what an asset catalog page shows of each asset.
CATALOG_QUERY = """{ assetNodes { assetKey { path } groupName description jobNames opName
  dependencyKeys { path } dependedByKeys { path } latestMaterialization { timestamp runId } } }"""


def warm_start_available() -> bool:
    """Whether this checkout's launcher has a warm-start (fork server) setting."""
    try:
        from tether.launcher.settings import LauncherSettings
    except ImportError:
        return False
    fields = dict(LauncherSettings.model_fields)
    # Since the redesign, the process substrate's own settings hold it (settings.process).
    process = fields.get("process")
    if process is not None and isinstance(process.annotation, type):
        fields.update(getattr(process.annotation, "model_fields", {}))
    return any("warm" in name for name in fields)


#: Dummy credentials for moto (it accepts any).
_MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_BUCKET = "tether-bench-logs"


class MotoS3:
    """moto's S3 in server mode: the customer's bucket of ``tether-s3`` (an in-memory
    stand-in for S3 on this machine, so the numbers are Tether's path, not a network's)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        if not Path(exe).exists():
            raise BenchError("moto_server is missing (uv sync installs the dev group's moto)")
        self._proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **_MOTO_CREDENTIALS},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.put(f"{self.url}/{_BUCKET}", timeout=1).raise_for_status()
                return
            except httpx.HTTPError as err:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"moto_server did not start: {err}") from err
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class TetherSystem:
    """One Tether stack (NATS, control plane on SQLite, poller, launcher, relays).

    Args:
        workspace: where the stack keeps its state.
        warm: start runs from the launcher's fork server (True) or cold (False).
        s3: logship writes compute logs to an S3 bucket (moto) instead of the control
            plane; stdout is then read through the agent's presigned URLs.
        name: the system's name (default from ``warm`` and ``s3``).
    """

    def __init__(
        self, workspace: Workspace, *, warm: bool, s3: bool = False, name: str | None = None
    ) -> None:
        self.name = name or ("tether-s3" if s3 else "tether-warm" if warm else "tether-cold")
        self.settings = {
            WARM_START_ENV: "1" if warm else "0",
            "database": "SQLite",
            DAEMON_INTERVAL_ENV: os.environ.get(DAEMON_INTERVAL_ENV, "1.0 (default)"),
        }
        self._workspace = workspace
        self._s3 = MotoS3(workspace.root / "moto.log") if s3 else None
        s3_env = (
            {
                **_MOTO_CREDENTIALS,
                "TETHER_LOGSHIP_SINK": "s3",
                "TETHER_LOGSHIP_S3_BUCKET": _BUCKET,
                "TETHER_LOGSHIP_S3_ENDPOINT_URL": self._s3.url,
            }
            if self._s3 is not None
            else {}
        )
        if self._s3 is not None:
            self.settings["compute logs"] = "S3 (moto server)"
        env = {
            **s3_env,
            **workspace.bench_env(),
            WARM_START_ENV: "1" if warm else "0",
            # No exporter: tracing stays on (it is part of the product) but ships nowhere.
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
        }
        self._stack = self._build_stack(
            StackConfig(
                home=workspace.root,
                port=free_port(),
                nats_port=free_port(),
                workspace_file=JOBS_DIR / "workspace.toml",
                env=env,
            )
        )
        self._http = httpx.Client(base_url=self._stack.config.url, timeout=60)
        self._event_cursor: dict[str, tuple[int, int]] = {}
        self._stdout_offset: dict[str, int] = {}

    def _build_stack(self, config: StackConfig) -> DevStack:
        """The stack to run (subclasses start another shape of it)."""
        return DevStack(config)

    def _gql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = self._http.post("/graphql", json={"query": query, "variables": variables}).json()
        if body.get("errors"):
            raise BenchError(f"{self.name} GraphQL error: {body['errors']}")
        return body["data"]

    def start(self) -> None:
        """Start the stack and wait until the bench location is loaded."""
        if self._s3 is not None:
            self._s3.start()
        self._stack.start()
        # Local stack, as `tether dev` runs it: the user API takes the admin token it minted.
        self._http.headers["Authorization"] = f"Bearer {self._stack.admin_token}"

        def loaded() -> bool:
            locs = self._gql("{ codeLocations { name loadStatus } }")["codeLocations"]
            return any(x["name"] == LOCATION and x["loadStatus"] == "LOADED" for x in locs)

        try:
            wait_until("the bench code location to load", loaded, timeout=120, interval=0.2)
        except BenchError as err:
            logs = "\n".join(f"--- {n}\n{self._stack.tail(n)}" for n, _ in self._stack.processes())
            raise BenchError(f"{err}\n{logs}") from err

    def stop(self) -> None:
        """Stop the stack."""
        self._http.close()
        # SIGTERM, then SIGKILL after 5 s: a benchmark should not wait on a slow shutdown
        # (graceful shutdown is the services' tests' business, not the bench's).
        self._stack.stop(timeout=5)
        if self._s3 is not None:
            self._s3.stop()

    def roots(self) -> list[int]:
        """Pids of the stack's children (NATS, control plane, agent services)."""
        return [proc.pid for _, proc in self._stack.processes()]

    def named_roots(self) -> dict[str, int]:
        """Each service's pid (the launcher's tree holds the code server and run workers)."""
        return {name: proc.pid for name, proc in self._stack.processes()}

    def submit(self, job: str, tags: dict[str, str] | None = None) -> str:
        """launchRun (with ``tags``); returns the run id."""
        result = self._gql(_LAUNCH, job=job, tags=tags)["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise BenchError(f"launchRun({job}) -> {result}")
        return str(result["run"]["id"])

    def set_tag_limit(self, tag: str, limit: int) -> None:
        """``updateDeploymentSettings``: at most ``limit`` launched, unfinished runs carrying
        the tag ``tag`` at once (the deployment's run queue is on from then on)."""
        got = self._gql(
            "mutation($s: DeploymentSettingsInput!) { updateDeploymentSettings(settings: $s) "
            "{ runTagConcurrencyLimits } }",
            s={"runTagConcurrencyLimits": {tag: limit}},
        )["updateDeploymentSettings"]["runTagConcurrencyLimits"]
        if got.get(tag) != limit:
            raise BenchError(f"tag limit {tag}={limit} not set: the deployment has {got}")

    def count_runs(self, status: str, tags: dict[str, str]) -> int:
        """Runs in ``status`` (QUEUED, STARTED...) carrying ``tags``, counted from ``runs``."""
        total, offset = 0, 0
        while True:
            page = self._gql(
                "query($s: RunStatus!, $t: JSON, $o: Int!) { runs(status: $s, tags: $t, "
                "limit: 1000, offset: $o) { id } }",
                s=status,
                t=tags,
                o=offset,
            )["runs"]
            total += len(page)
            if len(page) < 1000:
                return total
            offset += 1000

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        """States of the runs: a few by id, more page by page from ``runs`` (newest first)."""
        wanted = set(run_ids)
        if not wanted:
            return {}
        if len(wanted) <= _BY_ID_MAX:
            ids = sorted(wanted)
            params = ", ".join(f"$r{i}: String!" for i in range(len(ids)))
            fields = " ".join(f"r{i}: run(id: $r{i}) {{ status }}" for i in range(len(ids)))
            data = self._gql(
                f"query({params}) {{ {fields} }}", **{f"r{i}": rid for i, rid in enumerate(ids)}
            )
            return {
                rid: _normalize(data[f"r{i}"]["status"]) if data[f"r{i}"] else PENDING
                for i, rid in enumerate(ids)
            }
        found: dict[str, str] = {}
        offset = 0
        while len(found) < len(wanted):
            page = self._gql(
                "query($o: Int!) { runs(limit: 1000, offset: $o) { id status } }", o=offset
            )["runs"]
            for run in page:
                if run["id"] in wanted:
                    found[run["id"]] = _normalize(run["status"])
            if len(page) < 1000:
                break
            offset += 1000
        return {rid: found.get(rid, PENDING) for rid in wanted}

    def count_log_events(self, run_id: str) -> int:
        """LOG events of the run stored in the control plane (read incrementally)."""
        # From id 0: pages of afterId are in the order events were stored, so none is skipped.
        after, count = self._event_cursor.get(run_id, (0, 0))
        events = self._gql(
            "query($id: String!, $after: Int) { run(id: $id) { events(afterId: $after) "
            "{ id eventType } } }",
            id=run_id,
            after=after,
        )["run"]["events"]
        for event in events:
            if event["eventType"] == "LOG":
                count += 1
        if events:
            after = max(e["id"] for e in events)
        self._event_cursor[run_id] = (after, count)
        return count

    def read_stdout_bytes(self, run_id: str) -> int:
        """Bytes of the run's stdout readable through ``computeLogs`` (read incrementally,
        so every byte really travels through the API once); in S3 mode, through the URLs
        the agent presigns, fetched from the bucket."""
        if self._s3 is not None:
            return self._read_stdout_from_bucket(run_id)
        offset = self._stdout_offset.get(run_id, 0)
        while True:  # up to 4 MB per query, as the Dagster reader reads
            logs = self._gql(
                "query($id: String!, $o: Int!, $l: Int) { run(id: $id) { computeLogs(stream: "
                '"stdout", offset: $o, limit: $l) { stepKey nextOffset text } } }',
                id=run_id,
                o=offset,
                l=4 << 20,
            )["run"]["computeLogs"]
            got = max([int(chunk["nextOffset"]) for chunk in logs], default=offset)
            full = got - offset >= 4 << 20
            offset = got
            if not full:
                break
        self._stdout_offset[run_id] = offset
        return offset

    def _read_stdout_from_bucket(self, run_id: str) -> int:
        streams = self._gql(
            "query($id: String!) { computeLogStreams(runId: $id) { stepKey stream storage } }",
            id=run_id,
        )["computeLogStreams"]
        total = 0
        for found in streams:
            if found["stream"] != "stdout":
                continue
            key = f"{run_id}/{found['stepKey']}"
            offset = self._stdout_offset.get(key, 0)
            while True:
                answer = self._gql(
                    "query($id: String!, $step: String!, $o: Int!) { computeLogUrls(runId: $id, "
                    'stepKey: $step, stream: "stdout", offset: $o) { urls { length skip url } '
                    "hasMore nextOffset } }",
                    id=run_id,
                    step=found["stepKey"],
                    o=offset,
                )["computeLogUrls"]
                for part in answer["urls"]:
                    got = self._http.get(part["url"])
                    if got.status_code != 200 or len(got.content) != part["length"]:
                        raise BenchError(f"S3 object: HTTP {got.status_code}, {len(got.content)} B")
                if answer["urls"]:
                    offset = int(answer["nextOffset"])
                if not answer["hasMore"]:
                    break
            self._stdout_offset[key] = offset
            total += offset
        return total

    def stages(self, run_id: str) -> dict[str, float]:
        """Epoch time of the first event of each type of the run (for a latency breakdown)."""
        events = self._gql(
            "query($id: String!, $types: [EventType!]) { run(id: $id) { "
            "events(eventTypes: $types) { eventType timestamp } } }",
            id=run_id,
            # Not the log lines: a run has up to MAX_EVENTS_PAGE events per answer.
            types=[str(t) for t in EventType if t not in (EventType.LOG, EventType.STEP_OUTPUT)],
        )["run"]["events"]
        first: dict[str, float] = {}
        for event in events:
            first.setdefault(event["eventType"], float(event["timestamp"]))
        return first

    def materialize(self, graph: str) -> str:
        """``materializeAssets`` of every asset of one generated graph (its keys from the
        same generator the location uses); returns the run id."""
        keys = [[name] for name in graph_keys(graph, self._workspace.assets)]
        result = self._gql(_MATERIALIZE, keys=keys)["materializeAssets"]
        if result["__typename"] != "LaunchRunSuccess":
            hint = (
                " (the location's snapshot has no assets: code servers whose gRPC snapshot "
                "does not carry Repository.assets drop them)"
                if "does not compute asset" in str(result)
                else ""
            )
            raise BenchError(f"materializeAssets({graph}) -> {result}{hint}")
        return str(result["run"]["id"])

    def materialized_by(self, run_id: str, group: str) -> int:
        """Assets of ``group`` whose latest materialization is the run's."""
        nodes = self._gql(
            "query($g: String!) { assetNodes(groupName: $g) { latestMaterialization { runId } } }",
            g=group,
        )["assetNodes"]
        return sum(1 for n in nodes if (n["latestMaterialization"] or {}).get("runId") == run_id)

    def _location_status(self, name: str) -> tuple[str | None, Any]:
        for loc in self._gql("{ codeLocations { name loadStatus loadError { message } } }")[
            "codeLocations"
        ]:
            if loc["name"] == name:
                return loc["loadStatus"], loc["loadError"]
        return None, None

    def _wait_loaded(self, name: str, timeout: float) -> None:
        def loaded() -> bool:
            status, error = self._location_status(name)
            if status == "LOAD_ERROR":
                raise BenchError(f"location {name} failed to load: {error}")
            return status == "LOADED"

        # Not faster: every codeLocations answer parses each location's whole snapshot (the
        # 1,000-asset one too), so tight polling would slow down the load it waits for.
        wait_until(f"location {name} to load", loaded, timeout, interval=LOAD_POLL_S)

    def _catalog_config(self, round_: int | None) -> dict[str, Any]:
        env = {CATALOG_ENV: str(self._workspace.catalog_assets)}
        if round_ is not None:
            # A changed config: the launcher replaces the location's code server.
            env[CATALOG_ROUND_ENV] = str(round_)
        return {
            "name": CATALOG_LOCATION,
            "module": "tether_catalog",
            "working_directory": str(JOBS_DIR),
            "substrate": "process",
            "env": env,
        }

    def add_catalog(self, timeout: float) -> None:
        """``addLocation`` of the catalog location; returns once it is LOADED (its code
        server started, the module imported, the snapshot sent and stored)."""
        self._gql(
            "mutation($c: JSON!) { addLocation(config: $c) { name loadStatus } }",
            c=self._catalog_config(None),
        )
        self._wait_loaded(CATALOG_LOCATION, timeout)

    def load_catalog(self, round_: int, timeout: float) -> None:
        """Load the catalog in a new code server, as Dagster's reload does: ``updateLocation``
        with a changed config (one env value) makes the launcher replace the code server,
        which imports the module and builds the snapshot again; returns once LOADED (the
        mutation marks it LOADING before it answers, so LOADED after it is the new load)."""
        status = self._gql(
            "mutation($c: JSON!) { updateLocation(config: $c) { loadStatus } }",
            c=self._catalog_config(round_),
        )["updateLocation"]["loadStatus"]
        if status == "LOADED":
            raise BenchError("updateLocation answered LOADED: cannot tell the new load apart")
        self._wait_loaded(CATALOG_LOCATION, timeout)

    def reload_catalog(self, timeout: float) -> None:
        """``reloadLocation`` (the UI's reload) until LOADED again: with an unchanged config
        the launcher keeps the running code server and sends its snapshot again."""
        status = self._gql(
            "mutation($n: String!) { reloadLocation(name: $n) { loadStatus } }",
            n=CATALOG_LOCATION,
        )["reloadLocation"]["loadStatus"]
        if status == "LOADED":
            raise BenchError("reloadLocation answered LOADED: cannot tell the new load apart")
        self._wait_loaded(CATALOG_LOCATION, timeout)

    def catalog_nodes(self) -> int:
        """Run the catalog query (every asset of every location); how many nodes it gave."""
        return len(self._gql(CATALOG_QUERY)["assetNodes"])

    def log_tail(self, lines: int = 20) -> str:
        """Recent output of every service (for error messages)."""
        return "\n".join(
            f"--- {n}\n{self._stack.tail(n, lines)}" for n, _ in self._stack.processes()
        )


def _normalize(status: str) -> str:
    if status == "SUCCESS":
        return SUCCESS
    if status in ("FAILURE", "CANCELED"):
        return FAILURE
    return PENDING

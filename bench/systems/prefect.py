"""Prefect 3: ``prefect server start`` (SQLite), a process work pool and a process worker,
in its own venv, driven through the REST API."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import time
from collections.abc import Iterable
from typing import Any

import httpx
from tether.testing import free_port

from bench.envs import Env
from bench.processes import Group
from bench.systems.base import FAILURE, PENDING, SUCCESS, BenchError, Workspace, wait_until
from bench.systems.tether import JOBS_DIR

POOL = "bench"
#: Worker poll interval (Prefect's default is 10 s; tuned to 1 s here).
WORKER_QUERY_SECONDS = 1

#: Seconds the worker looks ahead for scheduled runs (Prefect's default, kept).
WORKER_PREFETCH_SECONDS = 10

_DEPLOY = """
import os
from prefect import flow
for name in ("two_ops", "log_storm"):
    flow.from_source(source={jobs!r}, entrypoint=f"prefect_flows.py:{{name}}").deploy(
        name="bench", work_pool_name={pool!r}, build=False, push=False, print_next_steps=False
    )
if os.environ.get("BENCH_SCHEDULE") == "1":
    # The precision workload's every-minute cron (UTC); the server's scheduler service
    # pre-creates its runs as SCHEDULED flow runs, the worker's poll submits them.
    flow.from_source(source={jobs!r}, entrypoint="prefect_flows.py:scheduled_two_ops").deploy(
        name="bench", work_pool_name={pool!r}, cron="* * * * *", build=False, push=False,
        print_next_steps=False,
    )
"""

_EVENT = re.compile(r"bench event (\d+)")


class PrefectSystem:
    """A Prefect server and one process worker under a temp PREFECT_HOME."""

    name = "prefect"

    def __init__(self, env: Env, workspace: Workspace) -> None:
        self._env = env
        self._workspace = workspace
        self._port = free_port()
        self._groups: list[Group] = []
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self._port}/api", timeout=60)
        self._deployments: dict[str, str] = {}
        #: API calls retried after a 503/429 (SQLite lock contention), for the report.
        self.retries = 0
        #: Why the asset workload has no Prefect number.
        self.assets_unsupported = (
            "not measured: Prefect's assets (@materialize) are tasks that record lineage "
            "events, with no code-location catalog of asset definitions to load or query"
        )
        #: Why the stdout workload has no Prefect number.
        self.stdout_unsupported = (
            "not applicable: Prefect keeps no raw stdout (the process worker streams a flow "
            "run's output to its own terminal); only print() calls in flows with "
            "log_prints=True become log records, which is the events workload"
        )
        self.settings = {
            "worker": "process pool, 1 worker, "
            f"PREFECT_WORKER_QUERY_SECONDS={WORKER_QUERY_SECONDS} (default 10), "
            f"PREFECT_WORKER_PREFETCH_SECONDS={WORKER_PREFETCH_SECONDS} (default)",
            "scheduler": "server scheduler service loop 60 s (default; pre-creates runs)",
            "database": "SQLite (PREFECT_HOME)",
        }

    def _request(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """One API call, retried like Prefect's own client does on 503/429.

        Prefect answers 503 when SQLite says "database is locked" under concurrent writes.
        """
        for attempt in range(12):
            try:
                resp = self._http.request(method, path, json=json)
            except httpx.TransportError:
                if attempt == 11:
                    raise
            else:
                if resp.status_code not in (429, 503):
                    return resp
                self.retries += 1
            time.sleep(min(0.2 * 2**attempt, 5.0))
        return resp

    def _child_env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self._workspace.bench_env(),
            "PREFECT_HOME": str(self._workspace.root / "prefect-home"),
            "PREFECT_API_URL": f"http://127.0.0.1:{self._port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
            "PREFECT_WORKER_PREFETCH_SECONDS": str(WORKER_PREFETCH_SECONDS),
            "VIRTUAL_ENV": str(self._env.root),
            "PATH": f"{self._env.root / 'bin'}:{os.environ.get('PATH', '')}",
        }

    def _spawn(self, name: str, argv: list[str]) -> Group:
        group = Group(
            name,
            argv,
            env=self._child_env(),
            cwd=JOBS_DIR,
            log_path=self._workspace.root / f"{name}.log",
        )
        self._groups.append(group)
        return group

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(
            argv, env=self._child_env(), cwd=JOBS_DIR, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BenchError(
                f"{' '.join(argv[:3])} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
            )

    def start(self) -> None:
        """Server, work pool, deployments, worker."""
        prefect = str(self._env.bin("prefect"))
        server = self._spawn(
            "prefect-server",
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self._port)],
        )

        def healthy() -> bool:
            if server.proc.poll() is not None:
                raise BenchError(f"prefect server exited:\n{server.tail()}")
            try:
                return self._http.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until("the prefect server", healthy, timeout=180, interval=0.5)
        self._run([prefect, "work-pool", "create", POOL, "--type", "process"])
        self._run([str(self._env.python), "-c", _DEPLOY.format(jobs=str(JOBS_DIR), pool=POOL)])
        for flow in ("two_ops", "log_storm"):
            resp = self._http.get(f"/deployments/name/{flow.replace('_', '-')}/bench")
            if resp.status_code != 200:
                resp = self._http.get(f"/deployments/name/{flow}/bench")
            resp.raise_for_status()
            self._deployments[flow] = resp.json()["id"]
        self._spawn("prefect-worker", [prefect, "worker", "start", "--pool", POOL])

        def worker_online() -> bool:
            resp = self._http.post(f"/work_pools/{POOL}/workers/filter", json={})
            return resp.status_code == 200 and bool(resp.json())

        wait_until("the prefect worker to register", worker_online, timeout=120, interval=0.5)

    def stop(self) -> None:
        """Stop the worker, then the server."""
        self._http.close()
        for group in reversed(self._groups):
            group.stop()

    def roots(self) -> list[int]:
        """Server and worker process trees."""
        return [g.pid for g in self._groups]

    def named_roots(self) -> dict[str, int]:
        """Server and worker (the worker's tree holds the flow-run processes)."""
        return {g.name: g.pid for g in self._groups}

    def submit(self, job: str) -> str:
        """Create a flow run of the job's deployment (picked up by the worker's next poll)."""
        resp = self._request("POST", f"/deployments/{self._deployments[job]}/create_flow_run", {})
        if resp.status_code >= 300:
            raise BenchError(f"prefect create_flow_run({job}) -> {resp.status_code} {resp.text}")
        return str(resp.json()["id"])

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Flow-run state types, 200 ids per request."""
        ids = list(run_ids)
        found: dict[str, str] = {}
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            resp = self._request(
                "POST", "/flow_runs/filter", {"flow_runs": {"id": {"any_": chunk}}, "limit": 200}
            )
            resp.raise_for_status()
            for run in resp.json():
                found[run["id"]] = _normalize((run.get("state") or {}).get("type"))
        return {rid: found.get(rid, PENDING) for rid in ids}

    def count_log_events(self, run_id: str) -> int:
        """Bench log lines stored: the highest ``bench event i`` among the newest logs, + 1.

        Prefect has no log count endpoint; its handler ships logs in order, so the newest
        stored line tells how many are in. Confirmed by an offset probe once complete.
        """
        newest = self._logs(run_id, sort="TIMESTAMP_DESC", offset=0, limit=200)
        highest = -1
        for entry in newest:
            match = _EVENT.search(entry.get("message", ""))
            if match:
                highest = max(highest, int(match.group(1)))
        count = highest + 1
        if count >= self._workspace.events:
            # Every line before the newest is stored too: the n-th oldest log must exist.
            if not self._logs(run_id, sort="TIMESTAMP_ASC", offset=count - 1, limit=1):
                return count - 1
        return count

    def _logs(self, run_id: str, *, sort: str, offset: int, limit: int) -> list[dict[str, Any]]:
        resp = self._request(
            "POST",
            "/logs/filter",
            {
                "logs": {"flow_run_id": {"any_": [run_id]}},
                "sort": sort,
                "offset": offset,
                "limit": limit,
            },
        )
        resp.raise_for_status()
        return resp.json()

    def stages(self, run_id: str) -> dict[str, float]:
        """Epoch time of the flow run's states, under Tether's event names.

        SCHEDULED ~ RUN_ENQUEUED, PENDING (the worker took it) ~ RUN_STARTING, RUNNING ~
        RUN_START, COMPLETED ~ RUN_SUCCESS.
        """
        resp = self._request("GET", f"/flow_run_states/?flow_run_id={run_id}")
        resp.raise_for_status()
        first: dict[str, float] = {}
        for state in resp.json():
            name = _STAGE_OF.get(state.get("type", ""))
            if name is not None:
                at = dt.datetime.fromisoformat(state["timestamp"]).timestamp()
                first[name] = min(at, first.get(name, at))
        return first

    def log_tail(self, lines: int = 30) -> str:
        """Recent output of the server and the worker."""
        return "\n".join(f"--- {g.name}\n{g.tail(lines)}" for g in self._groups)


#: Prefect state types that mark the same milestones as Tether's run events.
_STAGE_OF = {
    "SCHEDULED": "RUN_ENQUEUED",
    "PENDING": "RUN_STARTING",
    "RUNNING": "RUN_START",
    "COMPLETED": "RUN_SUCCESS",
}


def _normalize(state_type: str | None) -> str:
    if state_type == "COMPLETED":
        return SUCCESS
    if state_type in ("FAILED", "CRASHED", "CANCELLED"):
        return FAILURE
    return PENDING

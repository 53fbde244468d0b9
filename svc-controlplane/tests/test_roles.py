"""Control-plane roles as real processes on one real PostgreSQL: concurrent ``migrate``,
three ``serve --no-daemons`` and two ``daemons`` started at once, a burst of runs within
MAX_CONCURRENT_RUNS, and the daemons' leadership moving when its holder is killed -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from controlplane_testkit import ACK, CLAIM, EVENTS, LAUNCH, RESULTS, example_snapshot
from db_backends import PostgresDatabase
from tether.controlplane.db.locks import daemon_lock_name, lock_key
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.snapshots import InstigatorStatus, ScheduleSnapshot
from tether.shared.wire.work import WorkResult
from tether.testing import free_port

pytestmark = pytest.mark.integration

MAX_CONCURRENT_RUNS = 5
RUNS = 200
LEADER_RETRY_S = 0.5
COORDINATOR_LOCK = daemon_lock_name("run-coordinator")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tether.shared.runtime.cli", "controlplane", *args]


@pytest.fixture
def pg(postgres: PostgresDatabase) -> PostgresDatabase:
    postgres.reset()
    return postgres


def _env(pg: PostgresDatabase, tmp_path: Path, **extra: str) -> dict[str, str]:
    workspace = tmp_path / "workspace.toml"
    workspace.write_text('[[locations]]\nname = "loc"\nmodule = "jobs"\n')
    return {
        **os.environ,
        "TETHER_CONTROLPLANE_DATABASE_URL": pg.url,
        "TETHER_CONTROLPLANE_AGENT_TOKEN_FILE": str(tmp_path / "shared" / "agent.token"),
        "TETHER_CONTROLPLANE_ADMIN_TOKEN_FILE": str(tmp_path / "shared" / "admin.token"),
        "TETHER_CONTROLPLANE_WORK_SIGNING_KEY_FILE": str(tmp_path / "shared" / "work.key"),
        "TETHER_CONTROLPLANE_WORKSPACE_FILE": str(workspace),
        "TETHER_CONTROLPLANE_MAX_CONCURRENT_RUNS": str(MAX_CONCURRENT_RUNS),
        "TETHER_CONTROLPLANE_DAEMON_INTERVAL_S": "0.2",
        "TETHER_CONTROLPLANE_RUN_MONITOR_INTERVAL_S": "0.5",
        "TETHER_CONTROLPLANE_LEADER_RETRY_S": str(LEADER_RETRY_S),
        **extra,
    }


class Proc:
    """A control plane process whose output goes to a file (read when it matters)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never said {needle!r}:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def _leaders(pg: PostgresDatabase) -> dict[str, int]:
    """Daemon lock name -> pid of the process holding it (from pg_locks)."""
    names = [
        daemon_lock_name(n)
        for n in (
            "run-coordinator",
            "scheduler",
            "sensor-daemon",
            "backfill-daemon",
            "run-retrier",
            "run-monitor",
        )
    ]
    by_key = {}
    for name in names:
        unsigned = lock_key(name) % 2**64
        by_key[(unsigned >> 32, unsigned & 0xFFFFFFFF)] = name
    rows = pg.execute(
        "SELECT l.classid::bigint, l.objid::bigint, a.application_name FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND l.objsubid = 1 "
        # pg_locks spans the server: only this database's (other control planes may run).
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    leaders = {}
    for classid, objid, app in rows:
        name = by_key.get((classid, objid))
        if name is not None:
            assert app.startswith("tether-leader "), app
            leaders[name] = int(app.split()[1].split("#")[0])
    return leaders


def test_serve_refuses_a_database_nobody_migrated(pg: PostgresDatabase, tmp_path: Path) -> None:
    env = _env(pg, tmp_path, TETHER_CONTROLPLANE_PORT=str(free_port()))
    for args in (["serve", "--no-daemons"], ["daemons"]):
        done = subprocess.run(_cli(*args), env=env, capture_output=True, timeout=120)
        assert done.returncode == 2, done
        assert b"never migrated" in done.stderr and b"tether controlplane migrate" in done.stderr


# Minutes of real time (process starts, a 200-run burst, cron minutes) on 2 cores.
@pytest.mark.timeout(600)
async def test_three_apis_and_two_daemons_started_at_once_share_one_postgres(
    pg: PostgresDatabase, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    env = _env(pg, tmp_path)
    # Two migrations at once on the empty database: one migrates, the other waits.
    migrations = [Proc(f"migrate-{i}", _cli("migrate"), env, logs) for i in range(2)]
    assert [m.popen.wait(180) for m in migrations] == [0, 0], [m.output() for m in migrations]
    said = sorted("from revision (empty)" in m.output() for m in migrations)
    assert said == [False, True], [m.output() for m in migrations]

    ports = [free_port() for _ in range(3)]
    procs = [
        Proc(f"api-{i}", _cli("serve", "--no-daemons", "--port", str(p)), env, logs)
        for i, p in enumerate(ports)
    ] + [Proc(f"daemons-{i}", _cli("daemons"), env, logs) for i in range(2)]
    apis, daemons = procs[:3], procs[3:]
    killed: Proc | None = None
    try:
        for api in apis:
            await asyncio.to_thread(api.wait_for, "listening on", 120)
        for proc in daemons:
            await asyncio.to_thread(proc.wait_for, "daemons running", 120)
        # Every daemon has exactly one leader among the two daemons processes.
        deadline = time.monotonic() + 30
        while len(leaders := _leaders(pg)) < 6:
            assert time.monotonic() < deadline, leaders
            await asyncio.sleep(0.2)
        assert set(leaders.values()) <= {d.popen.pid for d in daemons}
        # Three bootstraps at once: one load of the location, one token of each file.
        assert pg.execute("SELECT count(*) FROM work_items WHERE kind = 'load_location'") == [(1,)]
        assert pg.execute("SELECT count(*) FROM api_tokens") == [(2,)]
        agent = (tmp_path / "shared" / "agent.token").read_text().strip()
        admin = (tmp_path / "shared" / "admin.token").read_text().strip()
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=60) for p in ports]
        try:
            killed = await _storm(pg, clients, agent, admin, daemons)
        finally:
            for client in clients:
                await client.aclose()
        statuses = pg.execute("SELECT status, count(*) FROM runs GROUP BY status")
        assert statuses == [("SUCCESS", RUNS)]
    finally:
        codes = {p.name: p.stop() for p in procs if p is not killed}
    assert codes == {p.name: 0 for p in procs if p is not killed}, {
        p.name: p.output()[-2000:] for p in procs
    }


async def _gql(client: httpx.AsyncClient, token: str, query: str, **variables: Any) -> Any:
    resp = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    body = resp.json()
    assert not body.get("errors"), body
    return body["data"]


async def _storm(
    pg: PostgresDatabase,
    clients: list[httpx.AsyncClient],
    agent: str,
    admin: str,
    daemons: list[Proc],
) -> Proc:
    """Launch RUNS runs through every API, finish them as an agent would, sample the
    launched-and-unfinished count, and kill -9 the coordinator's leader half way; return
    the process killed."""
    claim = {"substrates": ["process"], "max": 10, "waitMs": 0, "leaseSeconds": 60}
    (load,) = (await _gql(clients[0], agent, CLAIM, agentId="a", **claim))["claimWork"]
    assert load["kind"] == "load_location"
    result = WorkResult(
        id=load["id"],
        work_item_id=load["id"],
        kind=load["kind"],
        ok=True,
        payload={"snapshot": example_snapshot().model_dump(mode="json")},
    )
    stored = await _gql(clients[1], agent, RESULTS, items=[result.model_dump(mode="json")])
    assert stored["submitResults"]["stored"] == 1

    gate = asyncio.Semaphore(10)

    async def launch(i: int) -> str:
        async with gate:
            data = await _gql(clients[i % 3], admin, LAUNCH, loc="loc", job="hello")
            assert data["launchRun"]["__typename"] == "LaunchRunSuccess", data
            return str(data["launchRun"]["run"]["id"])

    launching = asyncio.gather(*(launch(i) for i in range(RUNS)))
    samples: list[int] = []
    finished: set[str] = set()
    stop = asyncio.Event()

    async def sample() -> None:
        conninfo = pg.url.replace("postgresql+psycopg", "postgresql")
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            while not stop.is_set():
                cursor = await conn.execute(
                    "SELECT count(*) FROM runs r JOIN work_items w ON w.id = 'launch-' || r.id "
                    "WHERE r.status NOT IN ('SUCCESS', 'FAILURE', 'CANCELED')"
                )
                row = await cursor.fetchone()
                assert row is not None
                samples.append(int(row[0]))
                await asyncio.sleep(0.02)

    async def finish(item: dict[str, Any]) -> None:
        run_id = item["payload"]["run_id"]
        await asyncio.sleep(random.uniform(0.05, 0.3))  # the run runs a little
        events = [
            RunEvent(run_id=run_id, seq=i + 1, event_type=t).model_dump(mode="json")
            for i, t in enumerate([EventType.RUN_START, EventType.RUN_SUCCESS])
        ]
        await _gql(random.choice(clients), agent, EVENTS, items=events)
        finished.add(run_id)

    sampler = asyncio.create_task(sample())
    killed: Proc | None = None
    takeover_s: float | None = None
    running: set[asyncio.Task[None]] = set()
    try:
        async with asyncio.timeout(240):
            while len(finished) < RUNS:
                client = random.choice(clients)
                items = (await _gql(client, agent, CLAIM, agentId="a", **claim))["claimWork"]
                if items:  # handed over: never offered again
                    await _gql(client, agent, ACK, agentId="a", ids=[i["id"] for i in items])
                for item in items:
                    assert item["kind"] == "launch_run", item
                    task = asyncio.create_task(finish(item))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if killed is None and len(finished) >= RUNS // 2:
                    leader = _leaders(pg)[COORDINATOR_LOCK]
                    (killed,) = [d for d in daemons if d.popen.pid == leader]
                    (standby,) = [d for d in daemons if d is not killed]
                    killed.popen.kill()
                    killed.popen.wait()
                    started = time.monotonic()
                    while _leaders(pg).get(COORDINATOR_LOCK) != standby.popen.pid:
                        assert time.monotonic() - started < 15, _leaders(pg)
                        await asyncio.sleep(0.05)
                    takeover_s = time.monotonic() - started
                    # Every other daemon it led moved too.
                    while set(_leaders(pg).values()) != {standby.popen.pid}:
                        assert time.monotonic() - started < 15, _leaders(pg)
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.05)
        await launching
    finally:
        stop.set()
        await sampler
        for task in running:
            task.cancel()
    assert killed is not None and takeover_s is not None
    assert takeover_s < 5 * LEADER_RETRY_S + 2, takeover_s
    assert "now leads tether:daemon:run-coordinator" in standby.output()
    assert max(samples) <= MAX_CONCURRENT_RUNS, max(samples)
    assert max(samples) == MAX_CONCURRENT_RUNS  # the burst really filled the slots
    return killed


def _minutely_snapshot() -> Any:
    base = example_snapshot()
    repo = base.repositories[0]
    schedule = ScheduleSnapshot(
        name="minutely",
        cron_schedule="* * * * *",
        job_names=["hello"],
        default_status=InstigatorStatus.RUNNING,
    )
    return base.model_copy(
        update={"repositories": [repo.model_copy(update={"schedules": [schedule]})]}
    )


# Minutes of real time (process starts, a 200-run burst, cron minutes) on 2 cores.
@pytest.mark.timeout(600)
async def test_an_every_minute_schedule_ticks_once_a_minute_across_a_leader_kill(
    pg: PostgresDatabase, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    env = _env(pg, tmp_path, TETHER_CONTROLPLANE_MAX_CONCURRENT_RUNS="0")
    migrate = Proc("migrate", _cli("migrate"), env, logs)
    assert migrate.popen.wait(180) == 0, migrate.output()
    port = free_port()
    api = Proc("api", _cli("serve", "--no-daemons", "--port", str(port)), env, logs)
    daemons = [Proc(f"daemons-{i}", _cli("daemons"), env, logs) for i in range(2)]
    procs = [api, *daemons]
    scheduler = daemon_lock_name("scheduler")
    killed: Proc | None = None
    try:
        await asyncio.to_thread(api.wait_for, "listening on", 120)
        for proc in daemons:
            await asyncio.to_thread(proc.wait_for, "daemons running", 120)
        agent = (tmp_path / "shared" / "agent.token").read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            claim = {"substrates": ["process"], "max": 10, "waitMs": 0, "leaseSeconds": 600}
            (load,) = (await _gql(client, agent, CLAIM, agentId="a", **claim))["claimWork"]
            result = WorkResult(
                id=load["id"],
                work_item_id=load["id"],
                kind=load["kind"],
                ok=True,
                payload={"snapshot": _minutely_snapshot().model_dump(mode="json")},
            )
            await _gql(client, agent, RESULTS, items=[result.model_dump(mode="json")])

        def ticks() -> list[tuple[float, float]]:
            return [
                (float(t), float(c))
                for t, c in pg.execute(
                    "SELECT tick_time, created_at FROM instigator_ticks ORDER BY tick_time"
                )
            ]

        async def wait_ticks(n: int) -> list[tuple[float, float]]:
            async with asyncio.timeout(150):
                while len(seen := ticks()) < n:
                    await asyncio.sleep(0.2)
            return seen

        (first,) = await wait_ticks(1)
        leader = _leaders(pg)[scheduler]
        (killed,) = [d for d in daemons if d.popen.pid == leader]
        (standby,) = [d for d in daemons if d is not killed]
        killed.popen.kill()
        killed.popen.wait()
        killed_at = time.time()
        async with asyncio.timeout(5 * LEADER_RETRY_S + 2):
            while _leaders(pg).get(scheduler) != standby.popen.pid:
                await asyncio.sleep(0.05)
        # The next minutes tick once each, from the standby, none missed or doubled.
        seen = await wait_ticks(3)
        await asyncio.sleep(2)  # nothing more lands for a tick already recorded
        seen = ticks()
        assert len(seen) == 3, seen
        times = [t for t, _ in seen]
        assert [round(b - a) for a, b in zip(times, times[1:], strict=False)] == [60, 60]
        assert all(t % 60 == 0 for t in times)
        assert all(created > killed_at for _, created in seen[1:])
        for tick, created in seen:
            assert created - tick < 5, (tick, created)  # on time, not caught up later
        assert first[0] == times[0]
        assert pg.execute("SELECT DISTINCT status FROM instigator_ticks") == [("STARTED",)]
    finally:
        codes = {p.name: p.stop() for p in procs if p is not killed}
    assert codes == {p.name: 0 for p in procs if p is not killed}

"""Code-server lifecycle against real NATS and real processes: the KV registry, adoption
after a launcher restart (even kill -9), the orphan grace, bounded cold starts, and
snapshots larger than a NATS message.

Launchers run as real subprocesses (``python -m tether.launcher``) where a test kills one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from launcher_testkit import (
    CODESERVER_SECRET,
    EXAMPLES_LOCATION,
    SIGNER,
    TEST_POLICY,
    Bus,
    launcher_settings,
    open_bus,
    running,
    work_item,
)
from tether.launcher import LauncherSettings, ProcessSubstrate
from tether.launcher.process import process_running, process_start_ticks
from tether.launcher.process.settings import ProcessSettings
from tether.launcher.registry import (
    CodeServerRecord,
    CodeServerRecords,
    record_key,
    registry_bucket,
)
from tether.launcher.tokens import CodeServerTokens
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import bearer_metadata
from tether.shared.nats import subjects
from tether.shared.nats.streams import kv_keys
from tether.shared.nats.subjects import Bucket, Stream
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import LocationConfig, location_config_hash
from tether.shared.wire.process import argv_location
from tether.shared.wire.snapshots import SNAPSHOT_ZLIB_KEY, snapshot_from_payload
from tether.shared.wire.work import WorkKind
from tether.testing import server_at

HUGE_LOCATION_CODE = """
from pydantic import BaseModel
from tether.sdk import Definitions, job, op

class Settings(BaseModel):
    table: str = "events"
    batch_size: int = 1000
    dry_run: bool = False

def make(i):
    @op(name=f"extract_{i}", description=f"Extract batch {i} from the source system.")
    def extract(config: Settings) -> int:
        return i

    @op(name=f"load_{i}", description=f"Load batch {i} into the warehouse.")
    def load(rows: int) -> None:
        pass

    @job(name=f"pipeline_{i:05d}", description=f"Pipeline number {i}.", tags={"team": "data"})
    def pipeline():
        load(extract())

    return pipeline

defs = Definitions(jobs=[make(i) for i in range(3000)], name="huge")
"""


# Incompressible descriptions: 1.5 MB even compressed, more than one NATS message.
RANDOM_LOCATION_CODE = """
import base64, os
from tether.sdk import Definitions, job, op

@op
def step() -> None:
    pass

def make(i):
    @job(name=f"noise_{i}", description=base64.b64encode(os.urandom(1500)).decode())
    def noise():
        step()
    return noise

defs = Definitions(jobs=[make(i) for i in range(1000)], name="noise")
"""


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    async with open_bus(
        nats_server.url, *streams, result_timeout_s=60, results_durable="lifecycle-results"
    ) as bus:
        yield bus


def settings_for(nats_url: str, **overrides: object) -> LauncherSettings:
    """Launcher settings with this module's agent id and roomier code-server timeouts."""
    values: dict[str, object] = {
        "agent_id": "lifecycle-test",
        "code_server_start_timeout_s": 60.0,
        "grpc_deadline_s": 30.0,
    }
    return launcher_settings(nats_url, **(values | overrides))


async def test_a_snapshot_larger_than_a_nats_message_arrives_compressed(
    bus: Bus, nats_server, tmp_path: Path
) -> None:
    (tmp_path / "huge_location.py").write_text(HUGE_LOCATION_CODE)
    (tmp_path / "noise_location.py").write_text(RANDOM_LOCATION_CODE)
    huge = LocationConfig(name="huge", module="huge_location", working_directory=str(tmp_path))
    noise = LocationConfig(name="noise", module="noise_location", working_directory=str(tmp_path))
    async with running(settings_for(nats_server.url), timeout_s=60):
        result = await bus.load(huge)
        too_large = await bus.load(noise)
    # What does not fit even compressed is a clear failure, not a result that never comes.
    assert not too_large.ok and too_large.error is not None
    assert too_large.error.cls_name == "ResultTooLarge"
    assert "max_payload of 1048576 bytes" in too_large.error.message
    assert result.ok, result.error
    assert bus.nc.max_payload == 1024 * 1024  # the server's default: the limit that matters
    assert SNAPSHOT_ZLIB_KEY in result.payload
    snapshot = snapshot_from_payload(result.payload)
    [repo] = snapshot.repositories
    assert len(repo.jobs) == 3000
    assert repo.jobs[1234].name == "pipeline_01234"
    # Uncompressed it would not have fitted in one message.
    assert len(snapshot.model_dump_json()) > bus.nc.max_payload


COUNTING_LOCATION_CODE = """
import os, time
from pathlib import Path
from tether.sdk import Definitions, job, op

# While importing, this worker is "starting": count the workers starting with it.
starting = Path(os.environ["STARTING_DIR"])
mark = starting / str(os.getpid())
mark.touch()
with open(os.environ["COUNTS_FILE"], "a") as counts:
    counts.write(f"{len(list(starting.iterdir()))}\\n")
time.sleep(float(os.environ.get("IMPORT_DELAY_S", "1")))
mark.unlink()

@op
def hello() -> None:
    pass

@job
def counted():
    hello()

defs = Definitions(jobs=[counted], name="counting")
"""


def launcher_env(nats_url: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    auth = server_at(nats_url).launcher_settings()
    env.update(
        {
            "TETHER_LAUNCHER_NATS_URL": nats_url,
            "TETHER_LAUNCHER_NATS_CREDENTIALS": str(auth["nats_credentials"]),
            "TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE": str(
                auth["nats_account_signing_key_file"]
            ),
            "TETHER_LAUNCHER_AGENT_ID": "lifecycle-test",
            "TETHER_LAUNCHER_CODE_SERVER_START_TIMEOUT_S": "60",
            "TETHER_LAUNCHER_STREAM_WAIT_TIMEOUT_S": "10",
            "TETHER_WORK_PUBLIC_KEYS": SIGNER.public_key,
            "TETHER_LAUNCHER_LOCATION_POLICY": TEST_POLICY.model_dump_json(),
        }
    )
    if "codeserver_secret_file" not in settings:
        env["TETHER_LAUNCHER_CODESERVER_SECRET"] = CODESERVER_SECRET
    env.update({f"TETHER_LAUNCHER_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@asynccontextmanager
async def launcher_process(nats_url: str, **settings: object) -> AsyncIterator[int]:
    """A launcher in its own process (so that the test can SIGKILL it); yields its pid."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tether.launcher", env=launcher_env(nats_url, **settings)
    )
    try:
        yield process.pid
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def records(bus: Bus) -> dict[str, CodeServerRecord]:
    """Every registry entry, by location (listed as the launcher lists them: kv_keys)."""
    kv = await registry_bucket(bus.js)
    out: dict[str, CodeServerRecord] = {}
    for key in await kv_keys(bus.js, str(Bucket.CODE_SERVERS)):
        entry = await kv.get(key)
        assert entry.value is not None
        record = CodeServerRecord.model_validate_json(entry.value)
        out[record.location.name] = record
    return out


def code_server_pids(location_name: str) -> set[int]:
    """Pids of the code-server processes serving ``location_name`` on this host."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state == "Z" or b"grpc" not in cmdline or b"--location-json" not in cmdline:
            continue
        config = json.loads(cmdline[cmdline.index(b"--location-json") + 1])
        if config["name"] == location_name:
            found.add(int(entry.name))
    return found


def environ_of(pid: int) -> bytes:
    """The environment ``pid`` started with."""
    return Path(f"/proc/{pid}/environ").read_bytes()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def until_gone(pid: int, timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while alive(pid):
            await asyncio.sleep(0.2)


def unique(name: str) -> LocationConfig:
    """The example location under a name no other test (or engineer) uses right now."""
    return EXAMPLES_LOCATION.model_copy(update={"name": f"{name}-{new_id()[:8]}"})


async def ping(record: CodeServerRecord, tokens: CodeServerTokens) -> int:
    """The pid the recorded code server answers a Ping with (with its token)."""
    assert record.address is not None
    auth = bearer_metadata(tokens.for_location(record.location))
    async with grpc.aio.insecure_channel(record.address) as channel:
        stub = pb_grpc.CodeServerStub(channel)
        reply = await stub.Ping(pb.PingRequest(), timeout=10, metadata=auth)
    return int(reply.pid)


async def test_a_restarted_launcher_adopts_the_code_servers_of_a_killed_one(
    bus: Bus, nats_server, tmp_path: Path
) -> None:
    a, b = unique("a"), unique("b")
    # The secret the tokens derive from: created by the first launcher, private, and
    # read by the next one, which can therefore call what it adopts.
    secret_file = tmp_path / "state" / "codeserver.secret"
    async with launcher_process(
        nats_server.url, orphan_grace_s=60, codeserver_secret_file=secret_file
    ) as launcher_pid:
        assert (await bus.load(a)).ok
        assert (await bus.load(b)).ok
        before = await records(bus)
        os.kill(launcher_pid, signal.SIGKILL)
    assert {before[a.name].state, before[b.name].state} == {"RUNNING"}
    assert before[a.name].launcher_pid == launcher_pid
    pids = {name: before[name].pid for name in (a.name, b.name)}
    assert all(code_server_pids(n) == {pids[n]} for n in (a.name, b.name))
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    tokens = CodeServerTokens.from_file(secret_file, create=False)
    # Orphaned, they still serve.
    assert await ping(before[a.name], tokens) == pids[a.name]
    # No token is recorded: the registry holds what the launcher needs to derive it.
    assert tokens.for_location(a) not in before[a.name].model_dump_json()

    settings = settings_for(
        nats_server.url,
        process=ProcessSettings(orphan_grace_s=60),
        codeserver_secret=None,
        codeserver_secret_file=secret_file,
    )
    async with running(settings, timeout_s=60):
        # The same processes answer; nothing was spawned.
        result_a, result_b = await bus.load(a), await bus.load(b)
        assert result_a.ok and result_b.ok
        assert all(code_server_pids(n) == {pids[n]} for n in (a.name, b.name))
        adopted = await records(bus)
        for name in (a.name, b.name):
            assert adopted[name].pid == pids[name]
            assert adopted[name].launcher_pid == os.getpid()
            assert adopted[name].state == "RUNNING"

        # A changed config replaces the adopted server (blue/green) and its entry.
        changed = b.model_copy(update={"env": {"SOME_SETTING": "1"}})
        assert (await bus.load(changed)).ok
        [new_pid] = code_server_pids(b.name)
        assert new_pid != pids[b.name]
        replaced = (await records(bus))[b.name]
        # The entry holds the config without env values, and the whole config's hash.
        assert replaced.pid == new_pid and replaced.location == argv_location(changed)
        assert replaced.location.env == {"SOME_SETTING": ""}
        assert replaced.config_hash == location_config_hash(changed)
        assert replaced.config_hash != adopted[b.name].config_hash
        await until_gone(pids[b.name])
    # A graceful stop stops adopted servers too, and says so in the registry.
    assert code_server_pids(a.name) == set() and code_server_pids(b.name) == set()
    final = await records(bus)
    assert final[a.name].state == final[b.name].state == "STOPPED"


async def test_a_launcher_with_another_secret_cannot_call_the_code_servers_it_finds(
    bus: Bus, nats_server
) -> None:
    location = unique("other-secret")
    other_secret = secrets.token_hex(32)
    async with launcher_process(
        nats_server.url, orphan_grace_s=60, codeserver_secret=other_secret
    ) as launcher_pid:
        assert (await bus.load(location)).ok
        before = (await records(bus))[location.name]
        os.kill(launcher_pid, signal.SIGKILL)
    assert before.pid is not None
    # The code server got its token, never the secret it derives from.
    environ = environ_of(before.pid)
    assert b"TETHER_CODESERVER_TOKEN=" in environ
    assert other_secret.encode() not in environ
    try:
        async with running(
            settings_for(nats_server.url, process=ProcessSettings(orphan_grace_s=60)), timeout_s=60
        ):
            # Its Adopt call was refused: a new code server serves the location.
            assert (await bus.load(location)).ok
            after = (await records(bus))[location.name]
            assert after.pid is not None and after.pid != before.pid
            assert alive(before.pid)  # it was there to adopt, and still is
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ping(before, CodeServerTokens(CODESERVER_SECRET.encode()))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert await ping(before, CodeServerTokens(other_secret.encode())) == before.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(before.pid, signal.SIGKILL)


async def test_an_orphan_nobody_adopts_stops_after_its_grace(bus: Bus, nats_server) -> None:
    location = unique("orphan")
    async with launcher_process(nats_server.url, orphan_grace_s=5) as launcher_pid:
        assert (await bus.load(location)).ok
        record = (await records(bus))[location.name]
        os.kill(launcher_pid, signal.SIGKILL)
    assert record.pid is not None and record.address is not None
    assert code_server_pids(location.name) == {record.pid}
    await until_gone(record.pid)
    # A launcher started after that finds the entry dead and starts a new server.
    async with running(settings_for(nats_server.url), timeout_s=60):
        assert (await bus.load(location)).ok
        [pid] = code_server_pids(location.name)
        assert pid != record.pid
        assert (await records(bus))[location.name].pid == pid


async def test_cold_starts_are_bounded_not_runs_in_flight(
    bus: Bus, nats_server, tmp_path: Path
) -> None:
    (tmp_path / "counting_location.py").write_text(COUNTING_LOCATION_CODE)
    starting = tmp_path / "starting"
    starting.mkdir()
    counts = tmp_path / "counts"
    location = LocationConfig(
        name="counting",
        module="counting_location",
        working_directory=str(tmp_path),
        env={"STARTING_DIR": str(starting), "COUNTS_FILE": str(counts)},
    )
    launches = [
        work_item(WorkKind.LAUNCH_RUN, location, run_id=new_id(), job_name="counted")
        for _ in range(6)
    ]
    health = work_item(WorkKind.CHECK_RUN_HEALTH, location, run_id=launches[0].payload["run_id"])
    # Two launch slots: launches waiting for a start slot fill them.
    settings = settings_for(
        nats_server.url,
        process=ProcessSettings(warm_start=False, max_concurrent_cold_starts=2),
        max_concurrency=2,
    )
    async with running(settings, timeout_s=60) as service:
        for launch in launches:
            await bus.send(launch)
        await bus.send(health)
        exits = [await bus.result(lambda r, w=w: r.id == f"{w.id}.exit") for w in launches]
        gate = service._substrate.cold_starts  # type: ignore[attr-defined]
    assert all(e.ok for e in exits), [e.payload for e in exits]
    # The health check did not wait behind launches waiting for a start slot: at most the
    # two that started at once were reported before it.
    ids = [r.id for r in bus.results]
    launched_before = {w.id for w in launches} & set(ids[: ids.index(health.id)])
    assert len(launched_before) <= 2
    seen = [int(line) for line in counts.read_text().split()]
    assert len(seen) == 6
    # Never more than two interpreters importing at once (six would, unbounded).
    assert max(seen) <= 2
    assert gate is not None and gate.peak == 2 and gate.starting == 0


async def test_registry_entries_are_scoped_and_any_location_name_is_a_valid_key(
    bus: Bus,
) -> None:
    store = await CodeServerRecords.open(bus.js)
    odd = EXAMPLES_LOCATION.model_copy(update={"name": "sales & ops/ünïcode.v2"})

    def record(scope: str, location: LocationConfig, pid: int) -> CodeServerRecord:
        return CodeServerRecord(
            scope=scope,
            substrate="process",
            location=location,
            config_hash=location_config_hash(location),
            state="RUNNING",
            pid=pid,
            launcher="host-1",
            started_at=0.0,
        )

    await store.put(record("agent-process-host a", odd, 1))
    await store.put(record("agent-process-host a", EXAMPLES_LOCATION, 2))
    await store.put(record("agent-process-other", EXAMPLES_LOCATION, 3))
    await store.put(record("agent-process-host a", odd, 4))  # overwrites: one per location
    mine = await store.list("agent-process-host a")
    assert sorted((r.location.name, r.pid) for r in mine) == [
        ("examples", 2),
        ("sales & ops/ünïcode.v2", 4),
    ]
    got = await store.get("agent-process-other", "examples")
    assert got is not None and got.pid == 3
    assert await store.get("agent-process-other", odd.name) is None
    assert record_key("s", "plain-name_1") == "s.plain-name_1"
    # A dot would add a key level: such names are hex-encoded behind "=" (never in a token).
    assert record_key("s", "a.b") == "s.=" + b"a.b".hex()


async def test_a_removed_location_stops_its_code_server_here_and_on_sibling_replicas(
    bus: Bus, nats_server
) -> None:
    first, second = unique("removed"), unique("removed-elsewhere")
    notices: list[str] = []

    async def on_notice(msg) -> None:
        notices.append(msg.data.decode())

    await bus.nc.subscribe(subjects.location_stopped("process"), cb=on_notice)
    scope = f"stop-{new_id()[:8]}"
    async with running(settings_for(nats_server.url, registry_scope=scope), timeout_s=60):
        for location in (first, second):
            assert (await bus.load(location)).ok
        pids = {name: r.pid for name, r in (await records(bus)).items()}
        assert pids[first.name] and pids[second.name]

        # The control plane's work item, served by this replica.
        stop = work_item(WorkKind.STOP_LOCATION, first)
        await bus.send(stop)
        result = await bus.result(lambda r: r.id == stop.id)
        assert result.ok and result.payload == {"stopped": True}
        await until_gone(pids[first.name])
        assert notices == [first.name]  # ...which tells the sibling replicas
        assert (await records(bus))[first.name].state == "STOPPED"

        # The notice of a sibling replica that served the work item for `second`.
        await bus.nc.publish(
            subjects.location_stopped("process"), second.name.encode(), headers={"From": "x"}
        )
        await until_gone(pids[second.name])
        assert (await records(bus))[second.name].state == "STOPPED"

        # A location this replica never ran: nothing to stop, still a clear answer.
        again = work_item(WorkKind.STOP_LOCATION, unique("never"))
        await bus.send(again)
        assert (await bus.result(lambda r: r.id == again.id)).payload == {"stopped": False}


async def test_a_removed_location_stops_its_fork_server(bus: Bus, nats_server) -> None:
    location = unique("forked")
    settings = settings_for(
        nats_server.url, process=ProcessSettings(warm_start=True), registry_scope=new_id()[:8]
    )
    async with running(settings, timeout_s=60) as service:
        assert (await bus.load(location)).ok
        substrate = service._substrate
        assert isinstance(substrate, ProcessSubstrate) and substrate.fork_servers is not None
        # The fork server has the location's code imported (it started with the code server).
        fork_server = await substrate.fork_servers.ensure(location, 60)
        pid = fork_server.spawned.process.pid
        start = process_start_ticks(pid)
        assert start is not None and process_running(pid, start)

        stop = work_item(WorkKind.STOP_LOCATION, location)
        await bus.send(stop)
        result = await bus.result(lambda r: r.id == stop.id)
        assert result.ok and result.payload == {"stopped": True}
        # Stopped (and reaped: it was our child) before the result was published.
        assert not process_running(pid, start)
        assert process_start_ticks(pid) != start  # gone from /proc (or a new process)
        assert location.name not in substrate.fork_servers.statuses()

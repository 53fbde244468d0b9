"""What user code gets from the launcher, on the process substrate, with real processes.

The launcher's environment holds the agent token, NATS and cloud credentials: none of it
may reach a code server, a fork server or a run worker (cold or forked), and no env value
of a location may show on any process's command line (``/proc/<pid>/cmdline``, what
``ps`` shows) or in the code-server registry (NATS KV). A location the agent's policy
does not allow is refused with a clear load error, and nothing of it starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from launcher_testkit import Bus, launcher_settings, open_bus, running, work_item
from tether.launcher.registry import CodeServerRecords, default_scope
from tether.shared.nats import subjects
from tether.shared.nats.headers import decode_log_chunk
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkKind

#: The launcher's own secrets, set in its environment for these tests.
LAUNCHER_SECRETS = {
    "TETHER_AGENT_TOKEN": "agent-token-d41d8cd9",
    "TETHER_LAUNCHER_SIGNING_KEY": "signing-key-8f00b204",
    "TETHER_NATS_CREDS": "nats-creds-e9800998",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-ecf8427e",
    "KUBERNETES_SERVICE_HOST": "10.0.0.1",
}
#: Launcher env user code is meant to get: the base (OTEL_*) and the default pass-through.
LAUNCHER_SHARED = {
    "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    "TETHER_RUN_WORKER_LOG_LEVEL": "INFO",
}
#: A value the operator gives user code through an ``${env:...}`` reference only.
AGENT_PROVIDED = "agent-provided-0cc175b9"
LOCATION_SECRET = "location-secret-92eb5ffe"

ENV_CODE = """
import json
import os
from pathlib import Path

from tether.sdk import Definitions, job, op


def dump(kind):
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\\0", b" ").decode(errors="replace")
    path = Path(os.environ["DUMP_DIR"]) / f"{kind}-{os.getpid()}.json"
    path.write_text(json.dumps({"env": dict(os.environ), "cmdline": cmdline}))


@op
def print_env() -> None:
    # A job that prints its environment: what any user code could read and send anywhere.
    for name in sorted(os.environ):
        print(f"{name}={os.environ[name]}", flush=True)
    dump("run")


@job
def env_job():
    print_env()


defs = Definitions(jobs=[env_job], name="envdump")
"""


@pytest.fixture
def launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's process environment: its secrets and what it shares."""
    for name, value in {**LAUNCHER_SECRETS, **LAUNCHER_SHARED}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AGENT_PROVIDED", AGENT_PROVIDED)


@pytest.fixture
async def bus(nats_server) -> Any:
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with open_bus(
        nats_server.url, *streams, result_timeout_s=60, traceparent=traceparent
    ) as bus:
        yield bus


def env_location(tmp_path: Path, name: str = "envdump") -> LocationConfig:
    code = tmp_path / "code"
    dumps = tmp_path / "dumps"
    code.mkdir(exist_ok=True)
    dumps.mkdir(exist_ok=True)
    (code / "env_location.py").write_text(ENV_CODE)
    return LocationConfig(
        name=name,
        module="env_location",
        working_directory=str(code),
        env={
            "DUMP_DIR": str(dumps),
            "LOC_SECRET": LOCATION_SECRET,
            "FROM_AGENT": "${env:AGENT_PROVIDED}",
        },
    )


def processes_of(location_name: str) -> dict[int, tuple[str, dict[str, str]]]:
    """pid -> (command line, initial environment) of this user's processes of a location."""
    marker = f'"name":"{location_name}"'
    found: dict[int, tuple[str, dict[str, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            if "tether.shared.runtime.cli" not in cmdline or marker not in cmdline:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                raw = f.read()
        except OSError:  # gone, or not ours
            continue
        env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        found[int(entry)] = (cmdline, env)
    return found


def assert_user_code_env(env: dict[str, str], cmdline: str, *, is_run: bool) -> None:
    """No launcher secret in ``env``; the location's env is there; no value in argv."""
    for name, value in LAUNCHER_SECRETS.items():
        assert name not in env, name
        assert value not in env.values(), name
    assert not [n for n in env if n.startswith("TETHER_LAUNCHER_") or n.startswith("AWS_")]
    assert env["LOC_SECRET"] == LOCATION_SECRET and env["FROM_AGENT"] == AGENT_PROVIDED
    for name, value in LAUNCHER_SHARED.items():
        assert env[name] == value, name
    assert "PATH" in env
    if is_run:
        # The run's extras (the launcher span's trace) are there too.
        assert env["TRACEPARENT"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    for value in (LOCATION_SECRET, AGENT_PROVIDED, "${env:AGENT_PROVIDED}"):
        assert value not in cmdline


async def launch(bus: Bus, location: LocationConfig) -> dict[str, Any]:
    item = work_item(WorkKind.LAUNCH_RUN, location, run_id=new_id(), job_name="env_job")
    await bus.send(item)
    started = await bus.result(lambda r: r.id == item.id)
    assert started.ok, started.error
    exited = await bus.result(lambda r: r.id == f"{item.id}.exit")
    assert exited.ok and exited.payload["exit_code"] == 0
    return started.payload


async def test_user_code_gets_no_launcher_secret_and_argv_kv_carry_no_env_value(
    launcher_environment: None, bus: Bus, nats_server, tmp_path: Path
) -> None:
    location = env_location(tmp_path)
    cold_only = location.model_copy(
        update={"name": "envdump-cold", "env": {**location.env, "TETHER_WARM_START": "0"}}
    )
    settings = launcher_settings(nats_server.url)
    async with running(settings):
        load = work_item(WorkKind.LOAD_LOCATION, location)
        await bus.send(load)
        loaded = await bus.result(lambda r: r.id == load.id)
        assert loaded.ok, loaded.error

        # A cold run (the location opts out of warm starts), then runs until one is forked
        # by the fork server, which starts once the code server is ready.
        runs = [await launch(bus, cold_only)]
        for _ in range(100):
            runs.append(await launch(bus, location))
            if runs[-1]["warm"]:
                break
            await asyncio.sleep(0.2)
        assert not runs[0]["warm"] and runs[-1]["warm"]

        # The code server and the fork server, read from /proc while they run.
        spawned = processes_of(location.name)
        kinds = {
            pid: cmd.split("tether.shared.runtime.cli", 1)[1].split()[1]
            for pid, (cmd, _) in spawned.items()
        }
        # (A forked worker may still be exiting: it is user code too, checked likewise.)
        assert set(kinds.values()) == {"forkserver", "grpc"}, kinds
        for cmdline, env in spawned.values():
            assert_user_code_env(env, cmdline, is_run=False)

        # The registry entry: the config without env values (its hash tells a change).
        records = await CodeServerRecords.open(bus.js)
        scope = default_scope(settings.agent_id, "process")
        record = await records.get(scope, location.name)
        assert record is not None and record.location.env == dict.fromkeys(location.env, "")
        kv = await bus.js.key_value(str(subjects.Bucket.CODE_SERVERS))
        for key in await kv.keys():
            value = (await kv.get(key)).value or b""
            assert LOCATION_SECRET.encode() not in value and AGENT_PROVIDED.encode() not in value

    dumps = [json.loads(p.read_text()) for p in (tmp_path / "dumps").glob("run-*.json")]
    assert len(dumps) == len(runs)
    # Warm children show their fork server's command line, cold ones their own.
    assert {"forkserver" in d["cmdline"] for d in dumps} == {True, False}
    for dump in dumps:
        assert_user_code_env(dump["env"], dump["cmdline"], is_run=True)
    # What the job printed reached NATS, and no launcher secret is in it.
    printed = b"".join(
        decode_log_chunk(m.headers, m.data).data
        for m in await bus.drain(subjects.logs_all(), Stream.LOGS)
    )
    assert LOCATION_SECRET.encode() in printed
    for value in LAUNCHER_SECRETS.values():
        assert value.encode() not in printed


STDLIB = sysconfig.get_paths()["stdlib"]


@pytest.mark.parametrize(
    ("updates", "reason"),
    [
        # Importing antigravity opens a browser: webbrowser runs $BROWSER as a command.
        ({"module": "antigravity", "env": {"BROWSER": "touch {marker}"}}, "standard library"),
        (
            {"module": None, "python_file": f"{STDLIB}/antigravity.py", "working_directory": None},
            "outside the directories the agent allows",
        ),
        # A warning category is imported by module name when the interpreter starts.
        ({"env": {"PYTHONWARNINGS": "ignore::antigravity.Warning"}}, "policy denied_env"),
        ({"env": {"LD_PRELOAD": "{marker}.so"}}, "policy denied_env"),
        ({"working_directory": "/"}, "outside the directories the agent allows"),
        ({"module": "pytest"}, "not in the location's working directory"),
        ({"env": {"T": "${env:TETHER_AGENT_TOKEN}"}}, "names an agent setting"),
        ({"env": {"T": "${env:UNSET_EVERYWHERE}"}}, "set neither in the agent's env files"),
        ({"env": {"T": "${k8s-secret:tether-agent/token}"}}, "needs the k8s substrate"),
    ],
)
async def test_a_location_outside_the_policy_is_a_load_error_and_nothing_starts(
    launcher_environment: None,
    bus: Bus,
    nats_server,
    tmp_path: Path,
    updates: dict[str, Any],
    reason: str,
) -> None:
    marker = tmp_path / "pwned"
    env = {k: v.replace("{marker}", str(marker)) for k, v in updates.get("env", {}).items()}
    name = f"refused-{new_id()[:8]}"
    base = env_location(tmp_path, name)
    location = base.model_copy(update={**updates, "env": {**base.env, **env}})
    async with running(launcher_settings(nats_server.url)):
        load = work_item(WorkKind.LOAD_LOCATION, location)
        await bus.send(load)
        loaded = await bus.result(lambda r: r.id == load.id)
        launch = work_item(WorkKind.LAUNCH_RUN, location, run_id=new_id(), job_name="env_job")
        await bus.send(launch)
        launched = await bus.result(lambda r: r.id == launch.id)
        assert processes_of(name) == {}
    for result in (loaded, launched):
        assert not result.ok and result.error is not None
        assert f"location {name!r} refused by the agent" in result.error.message
        assert reason in result.error.message
    assert not marker.exists()
    assert list((tmp_path / "dumps").iterdir()) == []


async def test_a_recorded_code_server_the_policy_now_refuses_is_not_adopted(
    tmp_path: Path,
) -> None:
    from launcher_testkit import user_code_under_test
    from tether.launcher import ProcessSubstrate
    from tether.launcher.process import process_start_ticks
    from tether.launcher.registry import CodeServerRecord
    from tether.shared.wire.process import argv_location

    me = os.getpid()
    start = process_start_ticks(me)
    assert start is not None

    def record(location: LocationConfig) -> CodeServerRecord:
        # A live process (this one) stands for the recorded code server.
        return CodeServerRecord(
            scope="s",
            substrate="process",
            location=argv_location(location),
            config_hash="h",
            state="RUNNING",
            address="127.0.0.1:1",
            pid=me,
            pid_start=start,
            launcher="gone",
            started_at=0.0,
        )

    substrate = ProcessSubstrate("python", user_code=user_code_under_test())
    try:
        allowed = env_location(tmp_path)
        assert await substrate.adopt_code_server(record(allowed)) is not None
        outside = allowed.model_copy(update={"working_directory": "/"})
        assert await substrate.adopt_code_server(record(outside)) is None
    finally:
        await substrate.aclose()

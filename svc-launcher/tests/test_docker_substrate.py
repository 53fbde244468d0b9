"""The docker substrate against a real Docker engine and an image built here (no registry).

`.ci/run` starts an engine (dockerd, vfs storage, host networking only); the image is this
host's Python plus the workspace's tether-shared and tether-codeserver, imported from a
root filesystem tarball and cached in the engine under a digest of its contents.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from launcher_testkit import EXAMPLES, ROOT, Bus, open_bus, running, work_item
from tether.launcher import CodeServerRegistry, LauncherService, LauncherSettings
from tether.launcher.docker._spec import (
    LABEL_AGENT,
    LABEL_CONFIG,
    LABEL_PORT,
    code_server_spec,
    config_hash,
    run_worker_spec,
)
from tether.launcher.registry import CodeServerRecords, default_scope
from tether.shared import subjects
from tether.shared.messages import (
    RUN_WORKER_EXITED,
    ContainerConfig,
    EventType,
    ExecuteRunArgs,
    LaunchRunPayload,
    LocationConfig,
    decode_log_chunk,
    new_id,
)
from tether.shared.subjects import Stream, WorkKind
from tether.shared.testing import server_at, skip_or_fail

SLOW_CODE = """
import time
from tether.sdk import Definitions, job, op

@op
def nap() -> None:
    print("napping", flush=True)
    for _ in range(600):
        time.sleep(0.1)

@job
def slow():
    nap()

from example_jobs import hello

defs = Definitions(jobs=[slow, hello], name="slow")
"""


# --- specs (no engine) ------------------------------------------------------------------


def test_code_server_spec_binds_loopback_on_host_network_and_carries_labels() -> None:
    location = LocationConfig(
        name="my loc/1",
        module="m",
        working_directory="/code",
        env={"A": "1"},
        container=ContainerConfig(volumes=["/src:/code:ro"], user="10001", memory="256m"),
    )
    spec = code_server_spec(location, image="img:1", python="python", agent_id="a", port=4321)
    assert spec["command"][-4:] == ["--host", "127.0.0.1", "--port", "4321"]
    assert spec["network_mode"] == "host" and spec["volumes"] == ["/src:/code:ro"]
    assert spec["labels"][LABEL_CONFIG] == config_hash(location)
    assert spec["labels"][LABEL_PORT] == "4321" and spec["labels"][LABEL_AGENT] == "a"
    assert spec["name"].startswith("tether-cs-a-my_loc_1-")
    assert spec["environment"] == {"A": "1"} and spec["working_dir"] == "/code"
    assert spec["user"] == "10001" and spec["mem_limit"] == "256m" and spec["init"] is True
    bridged = location.model_copy(update={"container": ContainerConfig(network_mode="bridge")})
    assert (
        "0.0.0.0"
        in code_server_spec(bridged, image="i", python="p", agent_id="a", port=1)["command"]
    )
    # Any change of the location's config is a new hash (a replacement).
    assert config_hash(location) != config_hash(location.model_copy(update={"env": {"A": "2"}}))


def test_run_worker_spec_runs_execute_run_with_the_run_env() -> None:
    args = ExecuteRunArgs(
        location=LocationConfig(name="l", module="m", env={"A": "1"}),
        run=LaunchRunPayload(run_id="r1", job_name="j"),
        nats_url="nats://127.0.0.1:4222",
    )
    spec = run_worker_spec(args, {"TRACEPARENT": "x"}, image="i", python="py", agent_id="a")
    assert spec["command"][:5] == ["py", "-m", "tether.shared.cli", "api", "execute-run"]
    assert ExecuteRunArgs.model_validate_json(spec["command"][5]) == args
    assert spec["environment"] == {"A": "1", "TRACEPARENT": "x"}
    assert "restart_policy" not in spec


# --- a real engine ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        import docker
    except ImportError:
        skip_or_fail("the docker SDK (a dependency of tether-launcher)")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure means: no engine here
        skip_or_fail(f"a Docker engine (.ci/run starts dockerd): {err}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def local_image(docker_client) -> str:
    from tether.launcher.docker import build_local_image

    return build_local_image(docker_client, workspace=ROOT, packages=["shared", "svc-codeserver"])


@pytest.fixture
def agent_id(docker_client) -> Iterator[str]:
    """A fresh agent id per test; every container labelled with it is removed afterwards."""
    agent = f"test-{new_id()[:10]}"
    yield agent
    for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={agent}"}):
        c.remove(force=True)


def docker_location(image: str, tmp_path: Path, **updates: object) -> LocationConfig:
    (tmp_path / "slow_location.py").write_text(SLOW_CODE)
    base = LocationConfig(
        name="slow",
        module="slow_location",
        working_directory=str(tmp_path),
        substrate="docker",
        image=image,
        # The working directory is mounted read-only: step outputs go elsewhere.
        env={"PYTHONPATH": str(EXAMPLES), "TETHER_RUN_WORKER_STORAGE_DIR": "/tmp/tether-storage"},
        container=ContainerConfig(
            volumes=[f"{tmp_path}:{tmp_path}:ro", f"{EXAMPLES}:{EXAMPLES}:ro"]
        ),
    )
    return base.model_copy(update=updates)


def substrate(agent: str, **kwargs: object):
    from tether.launcher.docker import DockerSubstrate

    return DockerSubstrate(agent_id=agent, start_timeout_s=60, stop_grace_s=2, **kwargs)


async def test_code_server_container_answers_adopts_replaces_and_restarts(
    docker_client, local_image: str, agent_id: str, tmp_path: Path
) -> None:
    location = docker_location(local_image, tmp_path)
    first = substrate(agent_id)
    registry = CodeServerRegistry(first)
    client = await registry.ensure(location)
    snapshot = await client.get_snapshot(30)
    assert snapshot.find_job("slow") is not None and snapshot.find_job("hello") is not None
    container_id = client.handle.native
    assert first.code_server_alive(client.handle)
    await registry.detach_all()
    await first.aclose()

    # A restarted launcher adopts the running container by its labels.
    second = substrate(agent_id)
    registry = CodeServerRegistry(second)
    try:
        adopted = await registry.ensure(location)
        assert adopted.handle.native == container_id
        assert adopted.handle.address == client.handle.address

        # A crash of the code server: the engine restarts it at the same address.
        container = docker_client.containers.get(container_id)
        container.exec_run(
            [
                "python",
                "-c",
                "import os, signal\n"
                "for p in os.listdir('/proc'):\n"
                "    if p.isdigit() and int(p) not in (1, os.getpid()):\n"
                "        if b'codeserver' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
                "            os.kill(int(p), signal.SIGKILL)\n",
            ]
        )
        async with asyncio.timeout(60):
            while docker_client.containers.get(container_id).attrs["RestartCount"] < 1:
                await asyncio.sleep(0.2)
            while True:  # listening again once its import is done
                try:
                    await adopted.get_snapshot(5)
                    break
                except Exception:  # noqa: BLE001 - not yet listening
                    await asyncio.sleep(0.3)

        # A config change: the new container starts before the old one goes (blue/green).
        changed = location.model_copy(update={"env": {**location.env, "SOME_SETTING": "1"}})
        replaced = await registry.ensure(changed)
        assert replaced.handle.native != container_id
        assert (await replaced.get_snapshot(30)).find_job("slow") is not None
        labelled = docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_AGENT}={agent_id}"}
        )
        assert [c.id for c in labelled] == [replaced.handle.native]
    finally:
        await registry.stop_all()
        await second.aclose()
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={agent_id}"})
        == []
    )


async def test_missing_image_and_crashing_code_server_are_clear_errors(
    local_image: str, agent_id: str, tmp_path: Path
) -> None:
    from tether.launcher import CodeServerStartError, RunLaunchError

    docker = substrate(agent_id)
    try:
        missing = docker_location("tether-local:does-not-exist", tmp_path)
        with pytest.raises(
            CodeServerStartError, match="cannot pull image 'tether-local:does-not-exist'"
        ):
            await docker.start_code_server(missing)
        never = missing.model_copy(update={"container": ContainerConfig(pull_policy="never")})
        with pytest.raises(
            CodeServerStartError, match="not present and the pull policy is 'never'"
        ):
            await docker.start_code_server(never)
        args = ExecuteRunArgs(
            location=never, run=LaunchRunPayload(run_id=new_id(), job_name="slow"), nats_url="x"
        )
        with pytest.raises(RunLaunchError, match="not present"):
            await docker.launch_run(args, {})
        # The interpreter cannot start: the error names the exit code and carries stderr.
        broken = docker_location(local_image, tmp_path, env={"PYTHONHOME": "/nonexistent"})
        with pytest.raises(CodeServerStartError) as raised:
            await docker.start_code_server(broken)
        assert "exited with code" in str(raised.value)
        assert "PYTHONHOME" in raised.value.stderr_tail or "encodings" in raised.value.stderr_tail
    finally:
        await docker.aclose()


# --- the launcher service on the docker substrate, with NATS --------------------------


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    async with open_bus(nats_server.url, *streams, result_timeout_s=120) as bus:
        yield bus


def launcher(nats_url: str, agent: str) -> AbstractAsyncContextManager[LauncherService]:
    """A launcher service on the docker substrate, as ``agent``."""
    settings = LauncherSettings(
        **server_at(nats_url).launcher_settings("docker"),
        agent_id=agent,
        substrate="docker",
        code_server_start_timeout_s=60.0,
        grpc_deadline_s=30.0,
        terminate_grace_s=2.0,
        stream_wait_timeout_s=10.0,
        graceful_shutdown_timeout=10.0,
    )
    return running(settings, timeout_s=60)


async def test_launcher_loads_runs_and_terminates_in_containers_and_adopts_after_restart(
    docker_client, bus: Bus, nats_server, local_image: str, agent_id: str, tmp_path: Path
) -> None:
    location = docker_location(local_image, tmp_path)
    load = work_item(WorkKind.LOAD_LOCATION, location)
    ok_run = new_id()
    slow_run = new_id()
    launch_ok = work_item(WorkKind.LAUNCH_RUN, location, run_id=ok_run, job_name="hello")
    launch_slow = work_item(WorkKind.LAUNCH_RUN, location, run_id=slow_run, job_name="slow")
    async with launcher(nats_server.url, agent_id):
        await bus.send(load)
        loaded = await bus.result(lambda r: r.id == load.id)
        assert loaded.ok, loaded.error
        jobs = {
            j["name"] for repo in loaded.payload["snapshot"]["repositories"] for j in repo["jobs"]
        }
        assert {"slow", "hello"} <= jobs
        await bus.send(launch_ok)
        await bus.send(launch_slow)
        exited = await bus.result(lambda r: r.id == f"{launch_ok.id}.exit")
        started_slow = await bus.result(lambda r: r.id == launch_slow.id)
        assert started_slow.ok
        [code_server] = docker_client.containers.list(
            filters={"label": [f"{LABEL_AGENT}={agent_id}", "io.tether.role=codeserver"]}
        )

    assert exited.kind == RUN_WORKER_EXITED and exited.payload == {"run_id": ok_run, "exit_code": 0}
    events = await bus.events(ok_run)
    types = [e.event_type for e in events]
    assert types.count(EventType.RUN_START) == 1 and EventType.RUN_SUCCESS in types
    # The finished run's container is gone; the code server's lives on without the launcher.
    assert (
        docker_client.containers.list(all=True, filters={"label": f"io.tether.run-id={ok_run}"})
        == []
    )
    assert docker_client.containers.get(code_server.id).status == "running"
    # The code-server registry names the container, and it still runs.
    record = await (await CodeServerRecords.open(bus.js)).get(
        default_scope(agent_id, "docker"), location.name
    )
    assert record is not None and record.state == "RUNNING"
    assert record.server_id == code_server.id and record.config_hash == config_hash(location)

    # A new launcher process: adopts the code server, terminates the run the first launched.
    terminate = work_item(WorkKind.TERMINATE_RUN, location, run_id=slow_run)
    reload = work_item(WorkKind.LOAD_LOCATION, location)
    async with launcher(nats_server.url, agent_id):
        await bus.send(reload)
        again = await bus.result(lambda r: r.id == reload.id)
        assert again.ok
        [still] = docker_client.containers.list(
            filters={"label": [f"{LABEL_AGENT}={agent_id}", "io.tether.role=codeserver"]}
        )
        assert still.id == code_server.id
        await bus.send(terminate)
        stopped = await bus.result(lambda r: r.id == terminate.id)
    assert stopped.ok and stopped.payload == {"run_id": slow_run, "signalled": True}
    [run_container] = docker_client.containers.list(
        all=True, filters={"label": f"io.tether.run-id={slow_run}"}
    )
    assert run_container.status == "exited"
    slow_events = await bus.events(slow_run)
    assert EventType.RUN_START in [e.event_type for e in slow_events]
    # Its stdout reached NATS from inside the container.
    chunks = [
        decode_log_chunk(m.headers, m.data)
        for m in await bus.drain(subjects.logs_all(), Stream.LOGS)
    ]
    assert b"napping" in b"".join(c.data for c in chunks if c.run_id == slow_run)

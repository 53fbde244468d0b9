"""The kubernetes substrate: manifests against the official schemas, API calls against an
emulator.

No cluster runs here. Every object the substrate produces is validated with
kubernetes-validate (strict, Kubernetes 1.30 schemas). The API interactions run over HTTP
against kmock's KubernetesEmulator, a third-party in-memory emulator of the Kubernetes
API (objects are stored, listed, patched and deleted; no controllers run). The tests play
the controllers and the kubelet: they mark a Deployment ready, a Job finished, or create
the pod and event of a failed image pull, as a cluster would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from k8s_testkit import Cluster, emulated_cluster
from tether.launcher.errors import CodeServerStartError, LocationRefusedError, RunLaunchError
from tether.launcher.policy import LocationPolicy, PolicyContext
from tether.launcher.substrate import WorkerRecord
from tether.launcher.userenv import UserCode, UserEnv
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import KubernetesConfig, LocationConfig
from tether.shared.wire.process import ExecuteRunArgs
from tether.shared.wire.work import LaunchRunPayload

pytestmark = pytest.mark.integration

K8S_VERSION = "1.30.0"
NS = "tether-test"

FULL = KubernetesConfig(
    namespace=NS,
    service_account="tether-user-code",
    resources={"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    node_selector={"pool": "etl"},
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "etl", "effect": "NoSchedule"}],
    image_pull_secrets=["registry"],
    env_from_secrets=["warehouse-credentials"],
    labels={"team": "data"},
    job_ttl_s=600,
)


#: The policy of the agent these tests play: FULL's image, service account and Secret.
POLICY = LocationPolicy(
    images=["registry.example.com/"],
    k8s_service_accounts=["tether-user-code"],
    k8s_secrets=["warehouse-credentials", "db"],
)


def user_code(policy: LocationPolicy = POLICY) -> UserCode:
    """The launcher's policy and env builder for the k8s substrate (no launcher env)."""
    return UserCode(policy, PolicyContext(substrate="k8s"), source_env={"SECRET": "launcher"})


def location(**updates: object) -> LocationConfig:
    base = LocationConfig(
        name="Sales ETL",
        module="sales.defs",
        working_directory="/code",
        substrate="k8s",
        image="registry.example.com/sales:1.2",
        env={"WAREHOUSE": "prod"},
        kubernetes=FULL,
    )
    return base.model_copy(update=updates)


def run_args(loc: LocationConfig) -> ExecuteRunArgs:
    return ExecuteRunArgs(
        location=loc,
        run=LaunchRunPayload(run_id=new_id(), job_name="daily"),
        nats_url="nats://nats:4222",
        traceparent=None,
    )


def validate(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# --- manifests ------------------------------------------------------------------------


def test_every_object_validates_and_carries_the_location_settings() -> None:
    from tether.launcher.k8s._manifests import (
        LABEL_CONFIG,
        PodDefaults,
        code_server_objects,
        config_hash,
        run_job,
    )

    loc = location()
    deployment, service = code_server_objects(
        loc,
        user_code().container_env(loc, {}),
        image=loc.image or "",
        python="python",
        agent_id="Agent 1",
        namespace=NS,
    )
    job = run_job(
        run_args(loc),
        user_code().container_env(loc, {"TRACEPARENT": "00-x"}),
        image="img",
        python="python",
        agent_id="a",
        namespace=NS,
    )
    bare = LocationConfig(name="x", module="m", substrate="k8s")
    bare_deployment, bare_service = code_server_objects(
        bare, UserEnv(), image="i", python="python", agent_id="a", namespace="default"
    )
    bare_job = run_job(
        run_args(bare), UserEnv(), image="i", python="python", agent_id="a", namespace="d"
    )
    for obj in (deployment, service, job, bare_deployment, bare_service, bare_job):
        validate(obj)
    # User pods: non-root, RuntimeDefault seccomp, no escalation, no capabilities; no API
    # token unless the location names a service account (tests/test_deploy.py checks the
    # whole restricted standard).
    for obj in (deployment, job, bare_deployment, bare_job):
        spec = obj["spec"]["template"]["spec"]
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
        }
        assert spec["containers"][0]["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        }
        # The image is read-only: /tmp is the pod's own emptyDir.
        assert spec["volumes"] == [{"name": "writable-0", "emptyDir": {}}]
        assert spec["containers"][0]["volumeMounts"] == [
            {"name": "writable-0", "mountPath": "/tmp"}
        ]
    for obj in (bare_deployment, bare_job):
        assert obj["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in deployment["spec"]["template"]["spec"]
    own_user, _ = code_server_objects(
        bare,
        UserEnv(),
        image="i",
        python="p",
        agent_id="a",
        namespace="d",
        defaults=PodDefaults(run_as_user=None),
    )
    assert "runAsUser" not in own_user["spec"]["template"]["spec"]["securityContext"]
    # The extra env (the caller token) reaches the code server's container, over the
    # location's own value of the same name.
    claims_token = loc.model_copy(update={"env": {**loc.env, "TETHER_CODESERVER_TOKEN": "mine"}})
    with_token, _ = code_server_objects(
        claims_token,
        user_code().container_env(claims_token, {"TETHER_CODESERVER_TOKEN": "t0k"}),
        image="i",
        python="p",
        agent_id="a",
        namespace="d",
    )
    token_env = [
        e
        for e in with_token["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "TETHER_CODESERVER_TOKEN"
    ]
    assert token_env == [{"name": "TETHER_CODESERVER_TOKEN", "value": "t0k"}]
    assert "t0k" not in with_token["spec"]["template"]["spec"]["containers"][0]["command"]

    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tether-user-code"
    assert pod["nodeSelector"] == {"pool": "etl"} and pod["tolerations"] == FULL.tolerations
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    [container] = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "warehouse-credentials"}}]
    # The location's resources, and the launcher's defaults of those it does not name.
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert bare_deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }
    assert {"name": "WAREHOUSE", "value": "prod"} in container["env"]
    assert container["command"][-4:] == ["--host", "0.0.0.0", "--port", "4000"]
    assert deployment["metadata"]["labels"][LABEL_CONFIG] == config_hash(loc)
    assert deployment["metadata"]["name"].startswith("tether-cs-sales-etl-")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 600
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod["restartPolicy"] == "Never"
    assert job_pod["containers"][0]["command"][3:5] == ["api", "execute-run"]
    assert {"name": "TRACEPARENT", "value": "00-x"} in job_pod["containers"][0]["env"]
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "data"


def test_validation_catches_a_broken_object() -> None:
    import kubernetes_validate
    from tether.launcher.k8s._manifests import run_job

    job = run_job(
        run_args(location()), UserEnv(), image="i", python="p", agent_id="a", namespace=NS
    )
    job["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


def test_secret_references_become_secret_key_refs_and_no_value_is_in_a_command() -> None:
    from tether.launcher.k8s._manifests import code_server_objects, run_job

    loc = location(
        env={"WAREHOUSE": "prod", "DB_PASSWORD": "${k8s-secret:db/password}"},
    )
    env = user_code().container_env(loc, {"TRACEPARENT": "00-x"})
    deployment, _ = code_server_objects(
        loc, env, image="i", python="python", agent_id="a", namespace=NS
    )
    job = run_job(run_args(loc), env, image="i", python="python", agent_id="a", namespace=NS)
    for obj in (deployment, job):
        validate(obj)
        [container] = obj["spec"]["template"]["spec"]["containers"]
        assert {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
        } in container["env"]
        assert {"name": "WAREHOUSE", "value": "prod"} in container["env"]
        # No env value (nor the reference) in the command; the launcher's env is not there.
        command = " ".join(container["command"])
        assert "prod" not in command and "k8s-secret" not in command
        assert "launcher" not in str(container["env"])
    [cs] = deployment["spec"]["template"]["spec"]["containers"]
    shown = LocationConfig.model_validate_json(
        cs["command"][cs["command"].index("--location-json") + 1]
    )
    assert shown.env == {"WAREHOUSE": "", "DB_PASSWORD": ""}


@pytest.mark.parametrize(
    ("updates", "reason"),
    [
        (
            {"kubernetes": FULL.model_copy(update={"service_account": "tether-launcher"})},
            "service account 'tether-launcher' is not allowed",
        ),
        (
            {"kubernetes": FULL.model_copy(update={"env_from_secrets": ["tether-agent"]})},
            "holds the agent's token",
        ),
        (
            {"env": {"T": "${k8s-secret:tether-agent/TETHER_AGENT_TOKEN}"}},
            "holds the agent's token",
        ),
        ({"env": {"T": "${k8s-secret:other/key}"}}, "not in the policy's k8s_secrets"),
        ({"env": {"T": "${env:SECRET}"}}, "needs the process or docker substrate"),
        ({"image": "evil.example.org/miner:1"}, "image 'evil.example.org/miner:1' is not allowed"),
        ({"module": "antigravity"}, "standard library"),
    ],
)
async def test_a_location_outside_the_policy_is_refused_and_nothing_is_created(
    cluster: Cluster, updates: dict[str, object], reason: str
) -> None:
    loc = location(**updates)
    substrate = cluster.substrate()
    with pytest.raises(LocationRefusedError, match=reason) as refused:
        await substrate.start_code_server(loc)
    assert isinstance(refused.value, CodeServerStartError)  # reported as the load error
    with pytest.raises(RunLaunchError, match=reason):
        await substrate.launch_run(run_args(loc), {})
    assert await cluster.deployments() == []
    assert (await cluster.call(cluster.batch.list_namespaced_job, NS)).items == []
    # The default policy allows no service account and no secret at all.
    with pytest.raises(LocationRefusedError, match="service account"):
        await cluster.substrate(
            user_code=user_code(LocationPolicy(images=["registry."]))
        ).start_code_server(location())
    await substrate.aclose()


# --- API calls against the emulator ---------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with emulated_cluster(user_code()) as c:
        yield c


async def test_code_server_is_created_adopted_replaced_and_stopped(cluster: Cluster) -> None:
    from tether.launcher.k8s._manifests import code_server_name

    loc = location()
    first = cluster.substrate()
    start = asyncio.create_task(first.start_code_server(loc))
    created = await cluster.mark_ready_when_created("tether-cs-sales-etl-")
    handle = await start
    assert handle.address == f"{code_server_name(loc, 'agent-1')}.{NS}.svc:4000"
    assert first.code_server_alive(handle)
    # What the API server stored is what the schemas accept.
    stored = cluster.api.sanitize_for_serialization(created)
    stored["metadata"] = {k: stored["metadata"][k] for k in ("name", "namespace", "labels")}
    stored.pop("status", None)
    validate(stored)
    assert await cluster.services() == [code_server_name(loc, "agent-1")]
    await first.aclose()

    # A restarted launcher adopts the ready Deployment: nothing new is created.
    second = cluster.substrate()
    adopted = await second.start_code_server(loc)
    assert adopted.address == handle.address
    assert [d.metadata.name for d in await cluster.deployments()] == [
        code_server_name(loc, "agent-1")
    ]

    # A changed config: the new Deployment first, the old objects once it is ready.
    changed = location(env={"WAREHOUSE": "staging"})
    start = asyncio.create_task(second.start_code_server(changed))
    new = await cluster.mark_ready_when_created(code_server_name(changed, "agent-1"))
    replaced = await start
    assert (
        new.metadata.name
        == code_server_name(changed, "agent-1")
        != code_server_name(loc, "agent-1")
    )
    assert [d.metadata.name for d in await cluster.deployments()] == [
        code_server_name(changed, "agent-1")
    ]
    assert await cluster.services() == [code_server_name(changed, "agent-1")]

    # Another agent's code servers are not ours to adopt or delete.
    other = cluster.substrate(agent="agent-2")
    start = asyncio.create_task(other.start_code_server(changed))
    theirs = await cluster.mark_ready_when_created("tether-cs-sales-etl-")
    assert theirs.metadata.name not in (code_server_name(changed, "agent-1"), new.metadata.name)
    await start
    assert len(await cluster.deployments()) == 2  # agent-1's is still there
    await other.stop_code_server(await other.start_code_server(changed))
    await other.aclose()

    await second.stop_code_server(replaced)
    assert not second.code_server_alive(replaced)
    assert second.code_server_alive(replaced) is False
    assert code_server_name(changed, "agent-1") not in await cluster.services()
    await second.aclose()


async def test_image_pull_failure_fails_fast_with_the_pod_events(cluster: Cluster) -> None:
    loc = location(image="registry.example.com/sales:missing")
    substrate = cluster.substrate()
    start = asyncio.create_task(substrate.start_code_server(loc))
    deployment = await _wait_for_deployment(cluster)
    labels = deployment.spec.selector.match_labels
    # Play the scheduler and kubelet: a pod that cannot pull its image, and its event.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cs-pod-1", "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "codeserver", "image": loc.image}]},
        "status": {
            "containerStatuses": [
                {
                    "name": "codeserver",
                    "image": loc.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}},
                }
            ]
        },
    }
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "cs-pod-1.1", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": "cs-pod-1", "namespace": NS},
        "type": "Warning",
        "reason": "Failed",
        "message": 'Failed to pull image "registry.example.com/sales:missing": not found',
    }
    # The event first: the substrate reads them once it sees the pod failing.
    await cluster.call(cluster.core.create_namespaced_event, NS, event)
    await cluster.call(cluster.core.create_namespaced_pod, NS, pod)
    with pytest.raises(CodeServerStartError) as raised:
        await start
    message = str(raised.value)
    assert "ImagePullBackOff" in message and "Failed to pull image" in message
    assert await cluster.deployments() == [] and await cluster.services() == []
    await substrate.aclose()


async def _wait_for_deployment(cluster: Cluster) -> Any:
    async with asyncio.timeout(30):
        while not (found := await cluster.deployments()):
            await asyncio.sleep(0.05)
    return found[0]


async def test_runs_are_jobs_that_finish_fail_and_terminate(cluster: Cluster) -> None:
    substrate = cluster.substrate()
    loc = location()

    ok = await substrate.launch_run(run_args(loc), {"TRACEPARENT": "00-abc"})
    ns, name = ok.worker_id.split("/")
    job = await cluster.call(cluster.batch.read_namespaced_job, name, ns)
    assert job.spec.backoff_limit == 0 and job.spec.ttl_seconds_after_finished == 600
    assert substrate.poll_run(ok) is None
    waiting = asyncio.create_task(substrate.wait_run(ok))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await cluster.call(
        cluster.batch.patch_namespaced_job_status, name, ns, {"status": {"succeeded": 1}}
    )
    assert await waiting == 0

    # A failed run reports its container's exit code (from its pod, as the kubelet set it).
    failed = await substrate.launch_run(run_args(loc), {})
    fns, fname = failed.worker_id.split("/")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{fname}-abcde", "namespace": fns, "labels": {"job-name": fname}},
        "spec": {"containers": [{"name": "run", "image": "i"}]},
        "status": {
            "containerStatuses": [
                {
                    "name": "run",
                    "image": "i",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 3}},
                }
            ]
        },
    }
    await cluster.call(cluster.core.create_namespaced_pod, fns, pod)
    await cluster.call(
        cluster.batch.patch_namespaced_job_status, fname, fns, {"status": {"failed": 1}}
    )
    assert await substrate.wait_run(failed) == 3
    assert await substrate.terminate_run(failed, 1) is False  # finished: nothing to stop

    # Terminate: the Job is deleted (its pod gets SIGTERM, then SIGKILL after the grace).
    # A handle rebuilt from the run's claim (another launcher process) is enough.
    slow = await substrate.launch_run(run_args(loc), {})
    other = cluster.substrate()
    rebuilt = other.recorded_run(WorkerRecord(slow.run_id, worker_id=slow.worker_id))
    assert rebuilt is not None and other.recorded_run(WorkerRecord(slow.run_id)) is None
    assert await other.run_alive(rebuilt)
    assert await other.terminate_run(rebuilt, 2) is True
    sns, sname = slow.worker_id.split("/")
    with pytest.raises(cluster.client.ApiException) as gone:
        await cluster.call(cluster.batch.read_namespaced_job, sname, sns)
    assert gone.value.status == 404
    assert await other.terminate_run(rebuilt, 2) is False
    assert await substrate.wait_run(slow) == -1
    await other.aclose()
    await substrate.aclose()


def test_launcher_without_kubernetes_config_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from tether.launcher import LauncherError, LauncherSettings
    from tether.launcher.service import make_substrate

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(LauncherError, match="no Kubernetes configuration"):
        make_substrate(LauncherSettings(substrate="k8s", agent_id="a"))
    with pytest.raises(LauncherError, match="available: process, docker, k8s"):
        make_substrate(LauncherSettings(substrate="nomad", agent_id="a"))

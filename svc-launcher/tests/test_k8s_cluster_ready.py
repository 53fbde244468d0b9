"""The kubernetes substrate against what a real cluster does to it, on the emulator.

Many Jobs at once (one list per poll interval for all of them), API errors in the middle
of a run, two replicas creating the same objects (409), pods the Job controller cannot
create (FailedCreate), a run's deadline, per-location security, and the launcher's Role
against every call the substrate made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_testkit import NS, Cluster, emulated_cluster
from pydantic import ValidationError
from tether.launcher.errors import (
    CodeServerStartError,
    LauncherError,
    LocationRefusedError,
    RunLaunchError,
)
from tether.launcher.policy import LocationPolicy, PolicyContext
from tether.launcher.userenv import UserCode
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import KubernetesConfig, KubernetesSecurity, LocationConfig
from tether.shared.wire.process import ExecuteRunArgs
from tether.shared.wire.work import LaunchRunPayload

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POLICY = LocationPolicy(images=["registry.example.com/"])


def user_code(policy: LocationPolicy = POLICY) -> UserCode:
    return UserCode(policy, PolicyContext(substrate="k8s"), source_env={})


def location(**kubernetes: Any) -> LocationConfig:
    return LocationConfig(
        name="etl",
        module="etl.defs",
        substrate="k8s",
        image="registry.example.com/etl:1",
        kubernetes=KubernetesConfig(namespace=NS, **kubernetes),
    )


def run_args(loc: LocationConfig, **tags: str) -> ExecuteRunArgs:
    return ExecuteRunArgs(
        location=loc,
        run=LaunchRunPayload(run_id=new_id(), job_name="daily", tags=tags),
        nats_url="nats://nats:4222",
    )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with emulated_cluster(user_code()) as c:
        yield c


# --- many runs: one list per poll interval --------------------------------------------


async def test_a_thousand_running_jobs_cost_one_list_per_poll_interval(cluster: Cluster) -> None:
    from tether.launcher.k8s._manifests import run_job
    from tether.launcher.substrate import WorkerRecord
    from tether.launcher.userenv import UserEnv

    interval = 0.5
    substrate = cluster.substrate(poll_interval_s=interval)
    loc = location()
    # 20 launched here, 980 launched before (another replica, or before a restart): their
    # Jobs are put into the emulator's store as the substrate makes them.
    handles = list(
        await asyncio.gather(*(substrate.launch_run(run_args(loc), {}) for _ in range(20)))
    )
    keys = {}
    for _ in range(980):
        args = run_args(loc)
        job = run_job(args, UserEnv(), image="i", python="p", agent_id="agent-1", namespace=NS)
        key = cluster.store("batch/v1/jobs", job)
        handle = substrate.recorded_run(
            WorkerRecord(args.run.run_id, worker_id=f"{NS}/{job['metadata']['name']}")
        )
        keys[handle.name] = key
        handles.append(handle)
    for h in handles[:20]:
        keys[h.name] = (keys[handles[20].name][0], h.namespace, h.name)
    assert len({h.name for h in handles}) == 1000
    # Another agent's Jobs in the namespace are not ours (listed, and filtered out).
    other = run_job(run_args(loc), UserEnv(), image="i", python="p", agent_id="b", namespace=NS)
    cluster.store("batch/v1/jobs", other)

    before = len(cluster.calls())
    started = time.monotonic()
    waits = [asyncio.create_task(substrate.wait_run(h)) for h in handles]
    # Health checks of some of them share the same lists.
    assert all(await asyncio.gather(*(substrate.run_alive(h) for h in handles[::10])))
    while substrate.job_watch.rounds < 5:
        await asyncio.sleep(interval / 5)
    assert not any(w.done() for w in waits)
    window = time.monotonic() - started
    during = cluster.calls()[before:]
    # Every call while 1,000 runs were watched was a list of the agent's Jobs...
    assert {(a, r) for a, r, _, _ in during} == {("LIST", "jobs")}, set(during)
    # ...one per round, rounds at most one per interval.
    lists = len(during)
    assert lists <= substrate.job_watch.rounds + 1
    assert lists <= window / interval + 1, (lists, window)
    print(f"1000 jobs: {lists} list calls in {window:.2f}s at a {interval}s interval")

    # The Job controller finishes them: each run's exit is read from the shared lists.
    for h in handles[:990]:
        cluster.patch_stored(keys[h.name], {"status": {"succeeded": 1}})
    for h in handles[990:]:
        cluster.patch_stored(keys[h.name], {"status": {"failed": 1}})
    codes = await asyncio.gather(*waits)
    assert codes[:990] == [0] * 990 and codes[990:] == [1] * 10
    assert [substrate.poll_run(h) for h in handles[:2]] == [0, 0]
    assert not any(await asyncio.gather(*(substrate.run_alive(h) for h in handles[:10])))
    await substrate.aclose()


async def test_code_servers_readiness_is_one_list_per_health_interval(cluster: Cluster) -> None:
    interval = 0.3
    substrate = cluster.substrate(health_interval_s=interval)
    locations = [location().model_copy(update={"name": f"loc-{n}"}) for n in range(12)]
    starts = [asyncio.create_task(substrate.start_code_server(loc)) for loc in locations]

    async def controller() -> None:  # every new code server gets its ready replica
        while True:
            for d in await cluster.deployments():
                if not (d.status and d.status.ready_replicas):
                    await cluster.call(
                        cluster.apps.patch_namespaced_deployment_status,
                        d.metadata.name,
                        NS,
                        {"status": {"readyReplicas": 1, "replicas": 1}},
                    )
            await asyncio.sleep(0.05)

    playing = asyncio.create_task(controller())
    try:
        handles = await asyncio.gather(*starts)
    finally:
        playing.cancel()
    before = len(cluster.calls())
    rounds = substrate.code_server_watch.rounds
    started = time.monotonic()
    while substrate.code_server_watch.rounds < rounds + 4:
        await asyncio.sleep(interval / 5)
    window = time.monotonic() - started
    assert all(substrate.code_server_alive(h) for h in handles)
    mine = [c for c in cluster.calls()[before:] if c[1] == "deployments"]
    # Twelve code servers watched: only lists of Deployments, one per round.
    assert {(a, r) for a, r, _, _ in mine} == {("LIST", "deployments")}, mine
    assert len(mine) <= substrate.code_server_watch.rounds - rounds + 1
    assert len(mine) <= window / interval + 2, (len(mine), window)
    # One of them loses its replica, another is deleted: both seen by the next rounds.
    lost, gone = handles[0], handles[1]
    await cluster.call(
        cluster.apps.patch_namespaced_deployment_status,
        lost.name,
        NS,
        {"status": {"readyReplicas": 0, "replicas": 1}},
    )
    await cluster.call(cluster.apps.delete_namespaced_deployment, gone.name, NS)
    async with asyncio.timeout(10):
        while substrate.code_server_alive(lost) or substrate.code_server_alive(gone):
            await asyncio.sleep(interval / 5)
    assert all(substrate.code_server_alive(h) for h in handles[2:])
    await substrate.aclose()


# --- API errors -----------------------------------------------------------------------


async def test_api_errors_never_stop_a_runs_exit_reporting(cluster: Cluster) -> None:

    substrate = cluster.substrate(retry_timeout_s=2)
    handle = await substrate.launch_run(run_args(location()), {})
    # Transient: three 503s in a row are retried within one round.
    left = cluster.fail_next(3, 503, "LIST", "jobs")
    assert await substrate.run_alive(handle) is True
    assert left == [0]
    waiting = asyncio.create_task(substrate.wait_run(handle))
    # Not transient and lasting (RBAC changed under us): rounds fail, the wait goes on.
    left = cluster.fail_next(3, 403, "LIST", "jobs")
    while left != [0]:
        await asyncio.sleep(0.02)
    assert not waiting.done()
    await cluster.finish_job(handle.namespace, handle.name, {"failed": 1})
    assert await waiting == 1

    # A health check that cannot list at all says so (it is not "dead").
    other = await substrate.launch_run(run_args(location()), {})
    cluster.fail_next(1, 403, "LIST", "jobs")
    with pytest.raises(LauncherError, match="cannot tell whether run"):
        await substrate.run_alive(other)
    await substrate.aclose()


async def test_a_lost_connection_is_retried(cluster: Cluster) -> None:
    from tether.launcher.k8s._substrate import transient_api_error

    substrate = cluster.substrate(retry_timeout_s=1)
    handle = await substrate.launch_run(run_args(location()), {})
    # The API server cannot be reached (the client points at a closed port): the calls
    # are retried, then the round fails; the wait goes on until it is back.
    waiting = asyncio.create_task(substrate.wait_run(handle))
    good_host = substrate._api.configuration.host
    substrate._api.configuration.host = "http://127.0.0.1:9"  # discard: refused
    rounds = substrate.job_watch.rounds
    while substrate.job_watch.rounds < rounds + 1:
        await asyncio.sleep(0.05)
    assert not waiting.done()
    substrate._api.configuration.host = good_host
    await cluster.finish_job(handle.namespace, handle.name, {"succeeded": 1})
    assert await waiting == 0
    import urllib3.exceptions

    assert transient_api_error(urllib3.exceptions.MaxRetryError(None, "/", "refused"))
    await substrate.aclose()


# --- 409: two replicas create the same objects ----------------------------------------


async def test_a_409_on_create_is_adoption_when_the_object_is_ours(cluster: Cluster) -> None:
    import kmock
    from tether.launcher.k8s._manifests import code_server_objects, run_job
    from tether.launcher.userenv import UserEnv

    loc = location()
    # Another replica creates the code server's objects between our list and our create.
    theirs, their_service = code_server_objects(
        loc, UserEnv(), image="i", python="p", agent_id="agent-1", namespace=NS
    )
    deployments = kmock.resource("apps", "v1", "deployments")
    # (the substrate's list: the test's own lists select nothing)
    cluster.emulator["list", deployments][lambda r: "labelSelector" in r.params][:1] << {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {},
        "items": [],
    }
    await cluster.call(cluster.apps.create_namespaced_deployment, NS, theirs)
    await cluster.call(cluster.core.create_namespaced_service, NS, their_service)
    substrate = cluster.substrate()
    start = asyncio.create_task(substrate.start_code_server(loc))
    await cluster.mark_ready_when_created(theirs["metadata"]["name"])
    handle = await start
    assert handle.name == theirs["metadata"]["name"]
    assert [d.metadata.name for d in await cluster.deployments()] == [handle.name]
    creates = [c for c in cluster.calls() if c[0] == "CREATE"]
    assert len(creates) == 4  # theirs 2, ours 2 (both 409, both adopted)

    # A run's Job created twice (a retried create whose answer was lost): the same Job.
    args = run_args(loc)
    job = run_job(args, UserEnv(), image="i", python="p", agent_id="agent-1", namespace=NS)
    await cluster.call(cluster.batch.create_namespaced_job, NS, job)
    run = await substrate.launch_run(args, {})
    assert run.name == job["metadata"]["name"]
    jobs = (await cluster.call(cluster.batch.list_namespaced_job, NS)).items
    assert [j.metadata.name for j in jobs] == [run.name]

    # An object of that name that is not ours is an error, and is left alone.
    squatted = run_args(loc)
    alien = run_job(squatted, UserEnv(), image="i", python="p", agent_id="agent-2", namespace=NS)
    await cluster.call(cluster.batch.create_namespaced_job, NS, alien)
    with pytest.raises(RunLaunchError, match="is not this agent's"):
        await substrate.launch_run(squatted, {})
    other_loc = location(labels={"x": "y"})
    alien_cs, _ = code_server_objects(
        other_loc, UserEnv(), image="i", python="p", agent_id="agent-1", namespace=NS
    )
    alien_cs["metadata"]["labels"] = {"app": "someone-else"}
    await cluster.call(cluster.apps.create_namespaced_deployment, NS, alien_cs)
    with pytest.raises(CodeServerStartError, match="is not this agent's"):
        await substrate.start_code_server(other_loc)
    assert len(await cluster.deployments()) == 2
    await substrate.aclose()


# --- pods that cannot be created, deadlines -------------------------------------------


async def test_failed_create_events_end_the_run_with_them_as_its_error(cluster: Cluster) -> None:
    substrate = cluster.substrate(failed_create_grace_s=0.3)
    handle = await substrate.launch_run(run_args(location()), {})
    waiting = asyncio.create_task(substrate.wait_run(handle))
    # Play the Job controller: the namespace's Pod Security admission refuses the pod.
    message = (
        f'Error creating: pods "{handle.name}-x7k2p" is forbidden: violates PodSecurity '
        '"restricted:latest": runAsNonRoot != true'
    )
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{handle.name}.1", "namespace": NS},
        "involvedObject": {"kind": "Job", "name": handle.name, "namespace": NS},
        "type": "Warning",
        "reason": "FailedCreate",
        "message": message,
    }
    await cluster.call(cluster.core.create_namespaced_event, NS, event)
    assert await waiting == -1
    assert handle.exit_error is not None and message in handle.exit_error
    assert "could not create its pod" in handle.exit_error
    # The Job is deleted: the controller stops trying, nothing lingers.
    assert (await cluster.call(cluster.batch.list_namespaced_job, NS)).items == []

    # A Job whose pod runs is never ended for old events (the pod was created after all).
    running = await substrate.launch_run(run_args(location()), {})
    await cluster.finish_job(running.namespace, running.name, {"active": 1, "ready": 1})
    waiting = asyncio.create_task(substrate.wait_run(running))
    await asyncio.sleep(1)
    assert not waiting.done()
    await cluster.finish_job(running.namespace, running.name, {"succeeded": 1})
    assert await waiting == 0 and running.exit_error is None

    # A pod the kubelet cannot start (its image is not there): the run ends with why.
    pulling = await substrate.launch_run(run_args(location()), {})
    await cluster.finish_job(pulling.namespace, pulling.name, {"active": 1})
    job = await cluster.call(cluster.batch.read_namespaced_job, pulling.name, NS)
    pod_name = f"{pulling.name}-q8z4w"
    labels = {**job.spec.template.metadata.labels, "job-name": pulling.name}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "run", "image": "i"}]},
        "status": {
            "containerStatuses": [
                {
                    "name": "run",
                    "image": "i",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}},
                }
            ]
        },
    }
    pull_event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod_name}.1", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": NS},
        "type": "Warning",
        "reason": "Failed",
        "message": 'Failed to pull image "registry.example.com/etl:1": not found',
    }
    await cluster.call(cluster.core.create_namespaced_event, NS, pull_event)
    await cluster.call(cluster.core.create_namespaced_pod, NS, pod)
    assert await substrate.wait_run(pulling) == -1
    assert "ImagePullBackOff" in (pulling.exit_error or "")
    assert "Failed to pull image" in (pulling.exit_error or "")
    await substrate.aclose()


async def test_a_runs_deadline_comes_from_its_max_runtime(cluster: Cluster) -> None:
    substrate = cluster.substrate(pod_defaults=_defaults(deadline_slack_s=30))
    handle = await substrate.launch_run(run_args(location(), **{"tether/max_runtime": "90.5"}), {})
    job = await cluster.call(cluster.batch.read_namespaced_job, handle.name, handle.namespace)
    assert job.spec.active_deadline_seconds == 91 + 30
    untimed = await substrate.launch_run(run_args(location()), {})
    job = await cluster.call(cluster.batch.read_namespaced_job, untimed.name, untimed.namespace)
    assert job.spec.active_deadline_seconds is None
    # Past the deadline Kubernetes kills the pod and fails the Job: the run says why.
    waiting = asyncio.create_task(substrate.wait_run(handle))
    deadline = {
        "type": "Failed",
        "status": "True",
        "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline",
    }
    await cluster.finish_job(handle.namespace, handle.name, {"conditions": [deadline]})
    assert await waiting == 1
    assert "DeadlineExceeded: Job was active longer than specified deadline" in (
        handle.exit_error or ""
    )
    await substrate.aclose()


def _defaults(**fields: Any) -> Any:
    from tether.launcher.k8s._manifests import PodDefaults

    return PodDefaults(**fields)


# --- per-location security ------------------------------------------------------------


async def test_location_security_is_validated_and_bounded_by_the_policy(cluster: Cluster) -> None:
    for bad in (
        {"run_as_user": 0},  # root while run_as_non_root
        {"capabilities_add": ["CAP_SYS_ADMIN"]},
        {"writable_paths": ["tmp"]},
        {"seccomp_profile": "Localhost"},  # no profile named
        {"seccomp_localhost_profile": "p.json"},  # without Localhost
        {"privileged": True},  # not a field: refused, not ignored
    ):
        with pytest.raises(ValidationError):
            KubernetesSecurity(**bad)
    with pytest.raises(ValidationError, match="only 'requests' and 'limits'"):
        KubernetesConfig(resources={"request": {"cpu": "1"}})
    # Unset security keeps every existing config's hash (it is left out of the dump).
    assert "security" not in KubernetesConfig().model_dump_json()

    root = location(security=KubernetesSecurity(run_as_non_root=False, run_as_user=0))
    substrate = cluster.substrate()
    with pytest.raises(LocationRefusedError, match="k8s_allow_unrestricted"):
        await substrate.launch_run(run_args(root), {})
    assert (await cluster.call(cluster.batch.list_namespaced_job, NS)).items == []
    allowed = cluster.substrate(
        user_code=user_code(POLICY.model_copy(update={"k8s_allow_unrestricted": True}))
    )
    handle = await allowed.launch_run(run_args(root), {})
    job = await cluster.call(cluster.batch.read_namespaced_job, handle.name, handle.namespace)
    assert job.spec.template.spec.security_context.run_as_user == 0
    # Inside the standard needs no permission.
    own = location(security=KubernetesSecurity(run_as_user=2000, read_only_root_filesystem=False))
    handle = await substrate.launch_run(run_args(own), {})
    job = await cluster.call(cluster.batch.read_namespaced_job, handle.name, handle.namespace)
    pod = job.spec.template.spec
    assert (pod.security_context.run_as_user, pod.security_context.fs_group) == (2000, 2000)
    assert pod.containers[0].security_context.read_only_root_filesystem is False
    for s in (substrate, allowed):
        await s.aclose()


# --- RBAC: the Role against the calls made --------------------------------------------

#: The emulator's actions as RBAC verbs.
_VERBS = {"LIST": "list", "FETCH": "get", "CREATE": "create", "DELETE": "delete"}
_VERBS |= {"UPDATE": "patch", "WATCH": "watch"}


async def test_every_call_the_substrate_made_is_granted_by_the_launcher_role(
    cluster: Cluster,
) -> None:
    # Everything: a code server started, adopted, replaced and stopped; runs launched,
    # failed, terminated, timed out; a pod that cannot pull; FailedCreate.
    substrate = cluster.substrate(failed_create_grace_s=0.1)
    loc = location()
    start = asyncio.create_task(substrate.start_code_server(loc))
    await cluster.mark_ready_when_created("tether-cs-")
    handle = await start
    await substrate.start_code_server(loc)
    run = await substrate.launch_run(run_args(loc), {})
    await substrate.run_alive(run)
    failed = await substrate.launch_run(run_args(loc), {})
    await cluster.finish_job(failed.namespace, failed.name, {"failed": 1})
    await substrate.wait_run(failed)
    await substrate.terminate_run(run, 1)
    stuck = await substrate.launch_run(run_args(loc), {})
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1", "namespace": NS},
        "involvedObject": {"kind": "Job", "name": stuck.name, "namespace": NS},
        "reason": "FailedCreate",
        "message": "quota",
    }
    await cluster.call(cluster.core.create_namespaced_event, NS, event)
    await substrate.wait_run(stuck)
    await substrate.stop_code_server(handle)
    await substrate.aclose()

    [role] = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy/k8s/launcher-rbac.yaml").read_text())
        if d["kind"] == "Role"
    ]
    granted = {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Every call but the test's own writes (playing the controllers: status patches,
    # events); its lists of Deployments are ones the substrate makes too.
    made = {(r, _VERBS[a]) for a, r, _, _ in cluster.calls() if a in _VERBS}
    test_only = {("deployments", "patch"), ("jobs", "patch"), ("events", "create")}
    used = made - test_only
    assert used <= granted, used - granted
    assert {("jobs", "list"), ("jobs", "create"), ("events", "list")} <= used
    assert not any(verb in ("watch", "patch", "update") for _, verb in granted)


# --- run arguments by reference -------------------------------------------------------


async def test_run_arguments_and_credentials_are_in_the_runs_secret_not_its_job(
    cluster: Cluster,
) -> None:
    import base64
    import json

    import kubernetes_validate
    from tether.shared.nats.auth import RUN_WORKER_CREDENTIALS_ENV
    from tether.shared.wire.process import argv_args

    substrate = cluster.substrate()
    loc = location().model_copy(update={"env": {"WAREHOUSE": "prod"}})
    args = run_args(loc).model_copy(
        update={"run": LaunchRunPayload(run_id=new_id(), job_name="d", run_config={"x": "$(HOME)"})}
    )
    creds = "-----BEGIN NATS USER JWT-----\nsecret-jwt\n------END NATS USER JWT------"
    extras = {RUN_WORKER_CREDENTIALS_ENV: creds, "TRACEPARENT": "00-abc-def-01"}
    handle = await substrate.launch_run(args, extras)
    raw = await cluster.call(
        cluster.batch.read_namespaced_job, handle.name, handle.namespace, _preload_content=False
    )
    job = json.loads(raw.data)
    text = json.dumps(job)
    # Neither the arguments nor the credentials are in the Job (anyone who may read Jobs
    # would see them), and no "$(...)" of user config is expanded by Kubernetes.
    assert "secret-jwt" not in text and "run_config" not in text and "$(HOME)" not in text
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == "$(TETHER_RUN_ARGS)"
    env = {e["name"]: e for e in container["env"]}
    for name, key in (
        ("TETHER_RUN_ARGS", "execute-run-args"),
        (RUN_WORKER_CREDENTIALS_ENV, RUN_WORKER_CREDENTIALS_ENV),
        ("TRACEPARENT", "TRACEPARENT"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": handle.name, "key": key}
    assert env["WAREHOUSE"] == {"name": "WAREHOUSE", "value": "prod"}  # the location's own
    job.pop("status", None)
    job["metadata"] = {k: job["metadata"][k] for k in ("name", "namespace", "labels")}
    kubernetes_validate.validate(job, "1.30.0", strict=True)

    secret = await cluster.call(cluster.core.read_namespaced_secret, handle.name, NS)
    [owner] = secret.metadata.owner_references
    stored_job = await cluster.call(cluster.batch.read_namespaced_job, handle.name, NS)
    assert (owner.kind, owner.name, owner.uid) == ("Job", handle.name, stored_job.metadata.uid)
    data = secret.string_data or {
        k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()
    }
    assert data[RUN_WORKER_CREDENTIALS_ENV] == creds
    shown = ExecuteRunArgs.model_validate_json(data["execute-run-args"])
    assert shown == argv_args(args) and shown.location.env == {"WAREHOUSE": ""}

    # A Secret the API refuses: the launch fails and leaves no Job behind.
    cluster.fail_next(1, 403, "CREATE", "secrets")
    refused = run_args(location())
    with pytest.raises(RunLaunchError, match="Secret of run"):
        await substrate.launch_run(refused, {})
    names = [
        j.metadata.name for j in (await cluster.call(cluster.batch.list_namespaced_job, NS)).items
    ]
    assert names == [handle.name]
    await substrate.aclose()


# --- the launcher service on the k8s substrate, with NATS -----------------------------


async def test_the_launcher_reports_a_pod_that_cannot_be_created_as_the_runs_error(
    cluster: Cluster, nats_server: Any, tmp_path: Path
) -> None:
    from launcher_testkit import PINNED, Bus, open_bus, running, work_item
    from tether.launcher import LauncherSettings
    from tether.launcher.k8s import K8sSettings
    from tether.shared.nats.auth import RUN_WORKER_CREDENTIALS_ENV
    from tether.shared.nats.subjects import Stream
    from tether.shared.wire.work import ReportKind, WorkItem, WorkKind, WorkResult

    # The launcher finds the cluster as kubectl would: through a kubeconfig.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": cluster.url}}],
                "users": [{"name": "launcher", "user": {"token": "t"}}],
                "contexts": [{"name": "e", "context": {"cluster": "emulator", "user": "launcher"}}],
                "current-context": "e",
            }
        )
    )

    async def send(bus: Bus, kind: WorkKind, **payload: Any) -> WorkItem:
        item = work_item(kind, loc, **payload)
        await bus.send(item)
        return item

    async def result(bus: Bus, result_id: str) -> WorkResult:
        return await bus.result(lambda r: r.id == result_id)

    loc = location()
    run_id = new_id()
    settings = LauncherSettings(
        **nats_server.launcher_settings("k8s"),
        agent_id="agent-1",
        substrate="k8s",
        k8s=K8sSettings(
            namespace=NS,
            kubeconfig=str(kubeconfig),
            poll_interval_s=0.1,
            failed_create_grace_s=0.3,
        ),
        terminate_grace_s=1.0,
        location_policy=POLICY,
        stream_wait_timeout_s=10.0,
        graceful_shutdown_timeout=10.0,
        **PINNED,
    )
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    async with (
        open_bus(nats_server.url, *streams, result_timeout_s=60) as bus,
        running(settings, timeout_s=60),
    ):
        launch = await send(bus, WorkKind.LAUNCH_RUN, run_id=run_id, job_name="daily")
        launched = await result(bus, launch.id)
        assert launched.ok, launched.error
        [job] = (await cluster.call(cluster.batch.list_namespaced_job, NS)).items
        # The run's NATS user is in its Secret, not in its Job.
        [container] = job.spec.template.spec.containers
        [creds] = [e for e in container.env if e.name == RUN_WORKER_CREDENTIALS_ENV]
        assert creds.value is None and creds.value_from.secret_key_ref.name == job.metadata.name
        health = await send(bus, WorkKind.CHECK_RUN_HEALTH, run_id=run_id)
        assert (await result(bus, health.id)).payload == {"run_id": run_id, "alive": True}

        # The namespace's admission refuses the pod: the Job controller says so in events.
        message = f'Error creating: pods "{job.metadata.name}-abcde" is forbidden: quota'
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "fc-1", "namespace": NS},
            "involvedObject": {"kind": "Job", "name": job.metadata.name, "namespace": NS},
            "type": "Warning",
            "reason": "FailedCreate",
            "message": message,
        }
        await cluster.call(cluster.core.create_namespaced_event, NS, event)
        exited = await result(bus, f"{launch.id}.exit")
        assert exited.kind == ReportKind.RUN_WORKER_EXITED and not exited.ok
        assert exited.payload == {"run_id": run_id, "exit_code": -1}
        assert exited.error is not None and message in exited.error.message
        assert exited.error.cls_name.endswith("RunWorkerError")
        health = await send(bus, WorkKind.CHECK_RUN_HEALTH, run_id=run_id)
        assert (await result(bus, health.id)).payload == {"run_id": run_id, "alive": False}


def _k8s_expand(arg: str, env: dict[str, str]) -> str:
    """What Kubernetes makes of a command argument (its expansion rules: ``$$`` is ``$``,
    ``$(NAME)`` a defined variable's value, anything else as written)."""
    out, i = [], 0
    while i < len(arg):
        if arg[i] == "$" and i + 1 < len(arg):
            if arg[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            end = arg.find(")", i + 2)
            if arg[i + 1] == "(" and end != -1 and arg[i + 2 : end] in env:
                out.append(env[arg[i + 2 : end]])
                i = end + 1
                continue
        out.append(arg[i])
        i += 1
    return "".join(out)


def test_no_config_value_is_expanded_by_kubernetes_on_the_way() -> None:
    from tether.launcher.k8s._manifests import code_server_objects, run_job
    from tether.launcher.userenv import UserEnv
    from tether.shared.wire.process import code_server_argv, run_worker_argv

    loc = location().model_copy(update={"attribute": "defs_$(HOME)_$$_$x"})
    env = {"HOME": "/root", "TETHER_RUN_ARGS": "{}"}
    deployment, _ = code_server_objects(
        loc, UserEnv(), image="i", python="p", agent_id="a", namespace=NS
    )
    [cs] = deployment["spec"]["template"]["spec"]["containers"]
    meant = code_server_argv("p", loc, host="0.0.0.0", port=4000)
    assert [_k8s_expand(a, env) for a in cs["command"]] == meant
    args = run_args(loc).model_copy(
        update={"run": LaunchRunPayload(run_id="r", job_name="j", run_config={"p": "$(HOME)"})}
    )
    job = run_job(args, UserEnv(), image="i", python="p", agent_id="a", namespace=NS)
    [run] = job["spec"]["template"]["spec"]["containers"]
    assert [_k8s_expand(a, env) for a in run["command"]] == run_worker_argv("p", args)
    # By reference, the placeholder is the one thing expanded.
    by_ref = run_job(
        args, UserEnv(), image="i", python="p", agent_id="a", namespace=NS, secret_env=frozenset()
    )
    [ref] = by_ref["spec"]["template"]["spec"]["containers"]
    assert _k8s_expand(ref["command"][-1], env) == "{}"

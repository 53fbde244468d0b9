"""The restricted Pod Security Standard on every pod Tether makes on Kubernetes.

The agent's namespace enforces it (deploy/k8s/namespace.yaml), and so may the namespaces
code locations run in: the pods of deploy/k8s and the code servers and run Jobs the k8s
substrate creates must all meet it, and validate against the official schemas. The rule
checker (tether.testing.podsecurity) is written from the standard's text; a test breaks
each rule once to show the checker catches it.
"""

from __future__ import annotations

import pytest
import yaml
from test_deploy import AGENT_SERVICES, DEPLOY, K8S_VERSION, k8s_documents
from tether.testing.podsecurity import pod_template, restricted_violations

pytestmark = pytest.mark.integration


def _user_pods() -> dict[str, dict]:
    """Pod specs of the code servers and run Jobs the k8s substrate creates, for a bare
    location and one that sets every kubernetes option."""
    from tether.launcher.k8s._manifests import code_server_objects, run_job
    from tether.launcher.userenv import UserEnv
    from tether.shared.wire.locations import KubernetesConfig, LocationConfig
    from tether.shared.wire.process import ExecuteRunArgs
    from tether.shared.wire.work import LaunchRunPayload

    bare = LocationConfig(name="bare", module="m", substrate="k8s")
    full = LocationConfig(
        name="full",
        module="m",
        substrate="k8s",
        image="registry.example/etl:1",
        working_directory="/app",
        env={"WAREHOUSE": "prod"},
        kubernetes=KubernetesConfig(
            namespace="etl",
            service_account="tether-user-code",
            resources={"limits": {"memory": "1Gi"}},
            node_selector={"pool": "etl"},
            tolerations=[{"key": "etl", "operator": "Exists", "effect": "NoSchedule"}],
            image_pull_secrets=["registry"],
            labels={"team": "data"},
        ),
    )
    pods: dict[str, dict] = {}
    for loc in (bare, full):
        deployment, _ = code_server_objects(
            loc, UserEnv({"T": "t"}), image="i", python="python", agent_id="a", namespace="ns"
        )
        args = ExecuteRunArgs(
            location=loc,
            run=LaunchRunPayload(run_id="r1", job_name="j"),
            nats_url="nats://nats:4222",
        )
        job = run_job(args, UserEnv(), image="i", python="python", agent_id="a", namespace="ns")
        pods[f"{loc.name} code server"] = deployment["spec"]["template"]["spec"]
        pods[f"{loc.name} run"] = job["spec"]["template"]["spec"]
    return pods


def test_user_pods_meet_the_restricted_pod_security_standard() -> None:
    pods = _user_pods()
    for name, pod in pods.items():
        assert restricted_violations(pod) == [], name
        assert pod["securityContext"]["runAsUser"] == 10001, name  # the images' user
    # No API token for user code, unless the location names the account it runs as.
    for name in ("bare code server", "bare run"):
        assert pods[name]["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pods[name]
    for name in ("full code server", "full run"):
        assert pods[name]["serviceAccountName"] == "tether-user-code"
        assert "automountServiceAccountToken" not in pods[name]  # the account decides


def test_the_agent_pods_meet_it_too() -> None:
    # The namespace enforces the restricted standard: every pod of deploy/k8s must meet it.
    namespace = next(d for _, d in k8s_documents() if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    templates = [(d, pod_template(d)) for _, d in k8s_documents()]
    pods = [(d, t) for d, t in templates if t is not None]
    assert len(pods) == len(AGENT_SERVICES) + 1  # and NATS
    for doc, (pod, pod_annotations) in pods:
        assert restricted_violations(pod, pod_annotations) == [], doc["metadata"]
        # Beyond the standard: every pod says what it needs (the scheduler places none
        # as if it needed nothing), and the agent services' images are read-only.
        for container in pod["containers"]:
            if doc["metadata"]["name"] in {f"tether-{s}" for s in AGENT_SERVICES}:
                assert container["securityContext"]["readOnlyRootFilesystem"] is True, doc
            assert container["resources"]["requests"], doc
            assert container["resources"]["limits"]["memory"], doc


def test_the_restricted_check_catches_each_rule() -> None:
    import copy

    [pod] = [p for n, p in _user_pods().items() if n == "bare run"]

    def container(p: dict) -> dict:
        return p["containers"][0]

    breaks = {
        "no pod securityContext": lambda p: p.pop("securityContext"),
        "runAsNonRoot false": lambda p: p["securityContext"].update(runAsNonRoot=False),
        "root user": lambda p: p["securityContext"].update(runAsUser=0),
        "no seccomp": lambda p: p["securityContext"].pop("seccompProfile"),
        "unconfined container": lambda p: container(p)["securityContext"].update(
            seccompProfile={"type": "Unconfined"}
        ),
        "privilege escalation": lambda p: container(p)["securityContext"].pop(
            "allowPrivilegeEscalation"
        ),
        "capabilities kept": lambda p: container(p)["securityContext"].pop("capabilities"),
        "capability added": lambda p: container(p)["securityContext"]["capabilities"].update(
            add=["SYS_ADMIN"]
        ),
        "privileged": lambda p: container(p)["securityContext"].update(privileged=True),
        "host network": lambda p: p.update(hostNetwork=True),
        "host path": lambda p: p.update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
        "host port": lambda p: container(p).update(ports=[{"containerPort": 1, "hostPort": 1}]),
        "unsafe sysctl": lambda p: p["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "1"}]
        ),
        "selinux user": lambda p: p["securityContext"].update(seLinuxOptions={"user": "root"}),
        "proc mount": lambda p: container(p)["securityContext"].update(procMount="Unmasked"),
        "root container": lambda p: container(p)["securityContext"].update(runAsUser=0),
        "non-root off in a container": lambda p: container(p)["securityContext"].update(
            runAsNonRoot=False
        ),
        "host pid": lambda p: p.update(hostPID=True),
        "windows host process": lambda p: p["securityContext"].update(
            windowsOptions={"hostProcess": True}
        ),
        "selinux type": lambda p: p["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
        "apparmor unconfined": lambda p: container(p)["securityContext"].update(
            appArmorProfile={"type": "Unconfined"}
        ),
        "privileged init container": lambda p: p.update(
            initContainers=[{**copy.deepcopy(container(p)), "name": "init", "securityContext": {}}]
        ),
    }
    for what, mutate in breaks.items():
        broken = copy.deepcopy(pod)
        mutate(broken)
        assert restricted_violations(broken), what

    # AppArmor's annotation form, on the pod's metadata.
    unconfined = {"container.apparmor.security.beta.kubernetes.io/run": "unconfined"}
    assert restricted_violations(pod, unconfined)
    assert (
        restricted_violations(
            pod, {"container.apparmor.security.beta.kubernetes.io/run": "runtime/default"}
        )
        == []
    )


def _objects(loc, **kwargs) -> list[dict]:
    from tether.launcher.k8s._manifests import code_server_objects, run_job
    from tether.launcher.userenv import UserEnv
    from tether.shared.wire.process import ExecuteRunArgs
    from tether.shared.wire.work import LaunchRunPayload

    deployment, service = code_server_objects(
        loc, UserEnv({"T": "t"}), image="i", python="python", agent_id="a", namespace="ns", **kwargs
    )
    args = ExecuteRunArgs(
        location=loc,
        run=LaunchRunPayload(run_id="r1", job_name="j", tags={"tether/max_runtime": "90"}),
        nats_url="nats://nats:4222",
    )
    job = run_job(
        args, UserEnv(), image="i", python="python", agent_id="a", namespace="ns", **kwargs
    )
    return [deployment, service, job]


#: Per-location security contexts that stay inside the restricted standard.
RESTRICTED_OVERRIDES = {
    "own uid, gid and fsGroup": {"run_as_user": 2000, "run_as_group": 3000, "fs_group": 4000},
    "writable image": {"read_only_root_filesystem": False, "writable_paths": []},
    "more writable paths": {"writable_paths": ["/tmp", "/home/app/.cache"]},
    "node's seccomp profile": {
        "seccomp_profile": "Localhost",
        "seccomp_localhost_profile": "profiles/etl.json",
    },
    "low port": {"capabilities_add": ["NET_BIND_SERVICE"]},
}

#: And ones that leave it (a policy must allow them: k8s_allow_unrestricted).
UNRESTRICTED_OVERRIDES = {
    "root": {"run_as_non_root": False, "run_as_user": 0},
    "escalation": {"allow_privilege_escalation": True},
    "unconfined": {"seccomp_profile": "Unconfined"},
    "added capability": {"capabilities_add": ["SYS_PTRACE"]},
    "capabilities kept": {"capabilities_drop": ["NET_RAW"]},
}


def test_every_object_the_substrate_makes_validates_and_meets_the_standard() -> None:
    import kubernetes_validate
    from tether.launcher.k8s._manifests import PodDefaults
    from tether.shared.wire.locations import KubernetesConfig, KubernetesSecurity, LocationConfig

    cases = {"no kubernetes settings": None, "defaults": KubernetesConfig()}
    for name, fields in RESTRICTED_OVERRIDES.items():
        cases[name] = KubernetesConfig(security=KubernetesSecurity(**fields))
    for name, kc in cases.items():
        loc = LocationConfig(name="l", module="m", substrate="k8s", kubernetes=kc)
        for defaults in (PodDefaults(), PodDefaults(run_as_user=None, resources={})):
            for obj in _objects(loc, defaults=defaults):
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
                template = pod_template(obj)
                if template is not None:
                    assert restricted_violations(*template) == [], (name, obj["kind"])
        assert kc is None or kc.security is None or kc.security.unrestricted() == [], name
    for name, fields in UNRESTRICTED_OVERRIDES.items():
        security = KubernetesSecurity(**fields)
        # The checker and the model's own account (what the policy reads) agree.
        assert security.unrestricted(), name
        loc = LocationConfig(
            name="l", module="m", substrate="k8s", kubernetes=KubernetesConfig(security=security)
        )
        for obj in _objects(loc):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            template = pod_template(obj)
            if template is not None:
                assert restricted_violations(*template), (name, obj["kind"])


def test_the_namespace_manifest_enforces_the_standard_on_every_mode() -> None:
    [namespace] = yaml.safe_load_all((DEPLOY / "k8s/namespace.yaml").read_text())
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode

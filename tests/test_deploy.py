"""deploy/: Kubernetes manifests against the official schemas, the compose file, images.

The images build from a local base made of this host's Python (no registry here); with a
registry they build from python:3.11-slim unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tether.shared.testing import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"
SERVICES = {
    "controlplane": "tether-controlplane",
    "poller": "tether-poller",
    "launcher": "tether-launcher",
    "eventrelay": "tether-eventrelay",
    "logship": "tether-logship",
    "codeserver": "tether-codeserver",
}
AGENT_SERVICES = ("poller", "launcher", "eventrelay", "logship")


def k8s_documents() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs


def test_kubernetes_manifests_are_valid_against_the_official_schemas() -> None:
    import kubernetes_validate

    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk, "every manifest is in the kustomization"
    docs = k8s_documents()
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {err.message}")
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for service in AGENT_SERVICES:
        assert ("Deployment", f"tether-{service}") in kinds
    assert {("ServiceAccount", "tether-launcher"), ("Role", "tether-launcher")} <= kinds
    # A broken manifest is caught (the check can fail).
    broken = dict(docs[-1][1], spec={"replicas": "two"})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomize_render_is_valid_and_namespaced() -> None:
    import kubernetes_validate

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        skip_or_fail("kubectl (Debian's kubernetes-client; .ci/run installs it)")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert len(rendered) == len(k8s_documents())
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tether"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "tether-agent"
        if doc["kind"] == "Deployment":
            [container] = doc["spec"]["template"]["spec"]["containers"]
            assert container["image"].endswith(":0.1.0")


def test_agent_pods_run_unprivileged_and_only_the_launcher_talks_to_the_api() -> None:
    for _, doc in k8s_documents():
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
        is_launcher = doc["metadata"]["name"] == "tether-launcher"
        assert pod["automountServiceAccountToken"] is is_launcher
        assert (pod.get("serviceAccountName") == "tether-launcher") is is_launcher


#: Each agent service's NATS user (the .creds file `tether nats-auth init` writes).
NATS_USERS = {
    "poller": "poller",
    "launcher": "launcher-k8s",
    "eventrelay": "eventrelay",
    "logship": "logship",
}


def test_nats_requires_auth_and_each_pod_mounts_only_its_own_nats_user() -> None:
    docs = {d["metadata"]["name"]: d for _, d in k8s_documents()}
    nats = docs["nats"]["spec"]["template"]["spec"]
    [server] = nats["containers"]
    assert server["args"][:2] == ["--config", "/etc/nats/auth/nats-server.conf"]
    assert {
        "name": "auth",
        "secret": {"secretName": "tether-nats-server", "defaultMode": 0o440},
    } in nats["volumes"]
    for service, user in NATS_USERS.items():
        pod = docs[f"tether-{service}"]["spec"]["template"]["spec"]
        secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert secrets == [f"tether-nats-{service}"], service
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TETHER_NATS_CREDENTIALS"] == f"/etc/tether/nats/{user}.creds"
        # Only the launcher holds the account signing key (it mints run workers' users).
        signing = env.get("TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE")
        assert (signing == "/etc/tether/nats/account-signing.nk") is (service == "launcher")
        assert pod["securityContext"]["fsGroup"] == 10001  # the uid reads the 0440 files


# Optional extras each image installs: the launcher serves every substrate, logship can
# write to the customer's S3.
IMAGE_EXTRAS = {"launcher": ("k8s", "ecs"), "logship": ("s3",)}


def test_image_requirements_match_the_lockfile() -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        skip_or_fail("uv (to export the locked requirements)")
    for short, dist in SERVICES.items():
        exported = subprocess.run(
            [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-header"]
            + ["--no-annotate", "--no-emit-workspace", "--package", dist]
            + [arg for extra in IMAGE_EXTRAS.get(short, ()) for arg in ("--extra", extra)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        committed = (DEPLOY / f"docker/requirements/{short}.txt").read_text()
        assert committed == exported, (
            f"deploy/docker/requirements/{short}.txt is stale: "
            "run deploy/docker/requirements/update.sh"
        )
        dockerfile = (DEPLOY / f"docker/{short}.Dockerfile").read_text()
        assert f"COPY svc-{short}/ /src/svc-{short}/" in dockerfile
        assert "USER 10001:10001" in dockerfile and "ARG BASE=python:3.11-slim" in dockerfile


def test_compose_file_is_valid_and_every_agent_service_scales() -> None:
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "postgres", "controlplane", *AGENT_SERVICES} <= set(services)
    for name in AGENT_SERVICES:
        # --scale needs no fixed name and no published port.
        assert "container_name" not in services[name] and "ports" not in services[name]
    tool = shutil.which("docker-compose")
    if tool is None:
        skip_or_fail("docker-compose (Debian's package; .ci/run installs it)")
    env = {**os.environ, "TETHER_AGENT_TOKEN": "t", "POSTGRES_PASSWORD": "p"}
    done = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose/compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)["services"]
    assert rendered["launcher"]["environment"]["TETHER_LAUNCHER_SUBSTRATE"] == "docker"
    assert rendered["poller"]["environment"]["TETHER_NATS_URL"] == "nats://127.0.0.1:4222"
    # NATS requires auth; each agent service mounts only its own NATS user.
    assert rendered["nats"]["command"][:2] == ["--config", "/run/secrets/nats-server-conf"]
    for name in AGENT_SERVICES:
        [secret, *extra] = [
            s["source"] if isinstance(s, dict) else s for s in rendered[name]["secrets"]
        ]
        assert secret == f"nats-{name}"
        assert extra == (["nats-account-signing-key"] if name == "launcher" else [])
        creds = rendered[name]["environment"]["TETHER_NATS_CREDENTIALS"]
        assert creds == f"/run/secrets/nats-{name}"
    # Without the secrets it refuses, naming them.
    env.pop("TETHER_AGENT_TOKEN")
    refused = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose/compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert refused.returncode != 0 and "TETHER_AGENT_TOKEN" in refused.stderr


def test_launcher_image_builds_from_a_local_base_and_runs_unprivileged() -> None:
    try:
        import docker

        client = docker.from_env(timeout=900)
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure means: no engine here
        skip_or_fail(f"a Docker engine (.ci/run starts dockerd): {err}")
    from tether.launcher.docker import build_local_image

    base = build_local_image(client, requirements=["pip"], repository="tether-local-python")
    try:
        previous = client.images.get("tether-launcher:test").id
    except docker.errors.ImageNotFound:
        previous = None
    image, _ = client.images.build(
        path=str(ROOT),
        dockerfile="deploy/docker/launcher.Dockerfile",
        buildargs={"BASE": base},
        network_mode="host",  # pip reaches the package index through the host
        tag="tether-launcher:test",
        rm=True,
        forcerm=True,
    )
    out = client.containers.run(
        image.id,
        entrypoint=["python", "-c"],
        command=[
            "import os, importlib.util as u, docker, tether.launcher;"
            "print(os.getuid(), u.find_spec('tether.controlplane') is None,"
            " u.find_spec('tether.codeserver') is None)"
        ],
        network_mode="host",
        remove=True,
    )
    # The previous build of the tag is a full copy on the vfs driver: drop it (not every
    # dangling image: the build stage's layers are the cache of the next build).
    if previous is not None and previous != image.id:
        try:
            client.images.remove(previous)
        except docker.errors.APIError:
            pass  # in use by a container
    # Its own distribution and tether-shared only, as an unprivileged user.
    assert out.decode().split() == ["10001", "True", "True"]

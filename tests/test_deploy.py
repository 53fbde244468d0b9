"""deploy/: Kubernetes manifests against the official schemas, the compose file, images.

The images build from a local base made of this host's Python (no registry here); with a
registry they build from python:3.11-slim unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from tether.testing import skip_or_fail

pytestmark = pytest.mark.integration

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


def compose_operator_dir(directory: Path) -> None:
    """An operator's directory: the compose files, and NATS's keys from `tether nats-auth
    init` (as deploy/README says)."""
    for name in ("compose.yaml", "workspace.toml", "nats-cluster.conf"):
        shutil.copy(DEPLOY / "compose" / name, directory / name)
    subprocess.run(
        [sys.executable, "-m", "tether.shared.runtime.cli", "nats-auth", "init"]
        + ["--dir", str(directory / "nats-auth"), "--substrate", "docker"],
        check=True,
        capture_output=True,
    )


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
    # kustomize adds its common labels to selectors too: the policies still hold (user
    # pods, which do not carry those labels, are selected by matchExpressions).
    assert_network_policies(rendered)


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
        if is_launcher:
            # Every replica derives code servers' tokens from the same secret.
            [launcher] = pod["containers"]
            [secret] = [e for e in launcher["env"] if e["name"].endswith("CODESERVER_SECRET")]
            assert secret["valueFrom"]["secretKeyRef"]["name"] == "tether-launcher-codeserver"


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
    # Its configuration includes the auth one `tether nats-auth init` wrote (and adds
    # JetStream and the cluster: tests/test_deploy_nats_cluster.py).
    assert server["args"][:2] == ["--config", "/etc/nats/conf/nats.conf"]
    conf = docs["nats-config"]["data"]["nats.conf"]
    assert conf.startswith('include "../auth/nats-server.conf"\n')
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
IMAGE_EXTRAS = {"launcher": ("docker", "k8s", "ecs"), "logship": ("s3",)}


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
    # The control plane's roles: a one-off migration, then the API and the daemons apart.
    migrate = services["controlplane-migrate"]
    assert migrate["entrypoint"][-1] == "migrate" and migrate["restart"] == "no"
    for role in ("controlplane", "controlplane-daemons"):
        needs = services[role]["depends_on"]["controlplane-migrate"]
        assert needs == {"condition": "service_completed_successfully"}
    assert services["controlplane"]["entrypoint"][-1].endswith("serve --no-daemons")
    assert services["controlplane-daemons"]["entrypoint"][-1] == "daemons"
    for name in AGENT_SERVICES:
        # --scale needs no fixed name and no published port.
        assert "container_name" not in services[name] and "ports" not in services[name]
    tool = shutil.which("docker-compose")
    if tool is None:
        skip_or_fail("docker-compose (Debian's package; .ci/run installs it)")
    env = {
        **os.environ,
        "TETHER_AGENT_TOKEN": "t",
        "POSTGRES_PASSWORD": "p",
        "TETHER_WORK_PUBLIC_KEYS": "ed25519:k",
        "TETHER_NATS_ROUTE_PASSWORD": "r",
    }
    done = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose/compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)["services"]
    assert rendered["launcher"]["environment"]["TETHER_LAUNCHER_SUBSTRATE"] == "docker"
    # Replicas and restarts share the code-server secret (on a volume), so they can call
    # each other's code servers.
    secret_file = rendered["launcher"]["environment"]["TETHER_LAUNCHER_CODESERVER_SECRET_FILE"]
    # docker-compose 1.x renders "source:target:mode", 2.x a mapping.
    mounts = [
        (v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
        for v in rendered["launcher"]["volumes"]
    ]
    assert ("launcher-state", str(Path(secret_file).parent)) in mounts
    assert rendered["poller"]["environment"]["TETHER_NATS_URL"] == ",".join(
        f"nats://127.0.0.1:{port}" for port in (4222, 4223, 4224)
    )  # the three nodes (tests/test_deploy_nats_cluster.py)
    for name in AGENT_SERVICES:
        assert rendered[name]["environment"]["TETHER_WORK_PUBLIC_KEYS"] == "ed25519:k"
    # NATS requires auth; each agent service mounts only its own NATS user.
    assert rendered["nats"]["command"][:2] == ["--config", "/run/secrets/nats-cluster-conf"]
    nats_secrets = [s["source"] if isinstance(s, dict) else s for s in rendered["nats"]["secrets"]]
    assert "nats-server-conf" in nats_secrets  # the auth the cluster configuration includes
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
    env["TETHER_AGENT_TOKEN"] = "t"
    env.pop("TETHER_WORK_PUBLIC_KEYS")
    unpinned = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose/compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert unpinned.returncode != 0 and "TETHER_WORK_PUBLIC_KEYS" in unpinned.stderr


def deploy_image(client, service: str) -> str:
    """deploy/docker/<service>.Dockerfile built from a local base; the image id."""
    from tether.testing.localimage import build_deploy_image

    return build_deploy_image(client, ROOT, service)


def test_launcher_image_builds_from_a_local_base_and_runs_unprivileged() -> None:
    from tether.testing.containers import LocalContainer, engine

    image = deploy_image(engine(), "launcher")
    code, out, err = LocalContainer(
        image,
        entrypoint=["python", "-c"],
        command=[
            "import os, importlib.util as u, docker, tether.launcher;"
            "print(os.getuid(), u.find_spec('tether.controlplane') is None,"
            " u.find_spec('tether.codeserver') is None)"
        ],
    ).run_once()
    assert code == 0, err
    # Its own distribution and tether-shared only, as an unprivileged user.
    assert out.split() == ["10001", "True", "True"]


def test_compose_nats_and_control_plane_come_up_healthy_and_nats_requires_auth(
    tmp_path: Path,
) -> None:
    """deploy/compose's nats and controlplane services, as docker-compose renders the file,
    from images built here (NATS: the same nats-server, shaped like the official image);
    the control plane on this host's PostgreSQL (the compose postgres image comes from a
    registry; host networking makes 127.0.0.1:5432 the same address)."""
    import asyncio
    import secrets

    import nats
    import nats.errors
    import psycopg
    from psycopg import sql
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy
    from tether.shared.nats import auth as natsauth
    from tether.testing import free_port
    from tether.testing.compose import ComposeStack, compose_tool
    from tether.testing.containers import engine
    from tether.testing.localimage import build_nats_image

    compose_tool()
    client = engine()
    controlplane_image = deploy_image(client, "controlplane")
    images = {
        "nats": build_nats_image(client),
        "controlplane-migrate": controlplane_image,
        "controlplane": controlplane_image,
        "controlplane-daemons": controlplane_image,
    }
    compose_operator_dir(tmp_path)
    database = f"tether_test_{int(time.time())}_{secrets.token_hex(4)}"
    admin = "postgresql://tether:tether@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.OperationalError as err:
        skip_or_fail(f"PostgreSQL on 127.0.0.1:5432 with role tether (.ci/run): {err}")
    nats_port, cp_port = free_port(), free_port()
    env = {
        **os.environ,
        "TETHER_AGENT_TOKEN": "agent-token",
        "POSTGRES_PASSWORD": "tether",
        "POSTGRES_DB": database,
        "TETHER_WORK_PUBLIC_KEYS": "ed25519:k",
        "TETHER_NATS_PORT": str(nats_port),
        "TETHER_NATS_CLUSTER_PORT": str(free_port()),
        "TETHER_NATS_ROUTE_PASSWORD": secrets.token_hex(16),
        "TETHER_CONTROLPLANE_PORT": str(cp_port),
    }
    started = time.monotonic()
    stack = ComposeStack(
        tmp_path / "compose.yaml",
        ["nats", "controlplane-migrate", "controlplane", "controlplane-daemons"],
        env,
        images=images,
        waits={
            "nats": LogMessageWaitStrategy("Server is ready"),
            "controlplane-migrate": LogMessageWaitStrategy("migrated the database from"),
            "controlplane-daemons": LogMessageWaitStrategy("daemons running"),
        },
    )
    try:
        with stack:
            up_s = time.monotonic() - started
            # Healthy by the compose file's own healthcheck: /healthz answered, so the
            # control plane migrated and reached its database.
            controlplane = stack.container("controlplane").get_wrapped_container()
            controlplane.reload()
            assert controlplane.attrs["State"]["Health"]["Status"] == "healthy"
            with urllib.request.urlopen(f"http://127.0.0.1:{cp_port}/healthz") as answer:
                assert answer.status == 200
            # It kept its work signing key on its volume (as uid 10001).
            key = controlplane.exec_run(
                ["python", "-c", "print(open('/var/lib/tether/work-signing.key').read()[:8])"]
            )
            assert key.exit_code == 0, key.output

            async def nats_auth() -> None:
                url = f"nats://127.0.0.1:{nats_port}"
                with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
                    await nats.connect(url, allow_reconnect=False, connect_timeout=5)
                creds = natsauth.file_credentials(tmp_path / "nats-auth/users/poller.creds")
                poller = await nats.connect(url, user_credentials=creds, connect_timeout=5)
                assert poller.is_connected
                await poller.close()

            asyncio.run(nats_auth())
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(database)))
    assert not client.containers.list(
        all=True, filters={"label": f"io.tether.test.compose-project={stack.project}"}
    )
    assert not [v for v in client.volumes.list() if v.name.startswith(f"{stack.project}_")]
    print(f"compose subset up and healthy in {up_s:.1f} s")


# --- network policies and the launcher's RBAC -----------------------------------------


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches ``labels``."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present, value = expr["key"] in labels, labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr["values"]) or (
            op == "NotIn" and value in expr["values"]
        ):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def _may_connect(policies: list[dict], source: dict[str, str], target: dict[str, str], port: int):
    """Whether ``source`` pod may open ``port`` on ``target`` (same namespace) under
    ``policies`` (NetworkPolicy semantics: allowed if any policy selecting the target
    allows it; unselected targets accept everything)."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], target)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = [p["port"] for p in rule.get("ports") or []]
            if ports and port not in ports:
                continue
            peers = rule.get("from")
            if not peers or any(
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and _selects(peer["podSelector"], source)
                for peer in peers
            ):
                return True
    return False


def test_network_policies_let_only_agent_services_and_runs_reach_nats() -> None:
    assert_network_policies([d for _, d in k8s_documents()])


def assert_network_policies(docs: list[dict]) -> None:
    """Who may connect to NATS and to code servers under the NetworkPolicies of ``docs``."""
    from tether.launcher.k8s._manifests import CODE_SERVER_PORT, code_server_objects, run_job
    from tether.launcher.userenv import UserEnv
    from tether.shared.wire.locations import LocationConfig
    from tether.shared.wire.process import ExecuteRunArgs
    from tether.shared.wire.work import LaunchRunPayload

    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["name"] for p in policies} >= {
        "tether-default-deny-ingress",
        "tether-nats",
        "tether-codeservers",
    }
    # The real pods' labels: the manifests' and what the launcher creates.
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    nats = labels["nats"]
    loc = LocationConfig(name="sales", module="m", substrate="k8s")
    deployment, _ = code_server_objects(
        loc, UserEnv(), image="i", python="p", agent_id="a", namespace="n"
    )
    args = ExecuteRunArgs(
        location=loc, run=LaunchRunPayload(run_id="r", job_name="j"), nats_url="nats://n:4222"
    )
    job = run_job(args, UserEnv(), image="i", python="p", agent_id="a", namespace="n")
    code_server = deployment["spec"]["template"]["metadata"]["labels"]
    run = job["spec"]["template"]["metadata"]["labels"]
    stranger: dict[str, str] = {"app": "something-else"}

    for service in AGENT_SERVICES:
        assert _may_connect(policies, labels[f"tether-{service}"], nats, 4222), service
    assert _may_connect(policies, run, nats, 4222)  # a run publishes its events and logs
    assert not _may_connect(policies, code_server, nats, 4222)
    assert not _may_connect(policies, stranger, nats, 4222)
    assert not _may_connect(policies, labels["tether-poller"], nats, 8222)

    assert _may_connect(policies, labels["tether-launcher"], code_server, CODE_SERVER_PORT)
    for source in (run, code_server, stranger, labels["tether-poller"]):
        assert not _may_connect(policies, source, code_server, CODE_SERVER_PORT), source
    # Nothing else accepts connections from anyone.
    assert not _may_connect(policies, labels["tether-launcher"], labels["tether-poller"], 8080)


_API_GROUPS = {"AppsV1Api": "apps", "CoreV1Api": "", "BatchV1Api": "batch"}
_VERBS = {"list": "list", "read": "get", "create": "create", "delete": "delete"}
_VERBS |= {"patch": "patch", "replace": "update"}


def _substrate_api_calls() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every Kubernetes call the k8s substrate makes,
    read from its source: ``self._apps = k8s.AppsV1Api(...)`` and then
    ``self._apps.create_namespaced_deployment`` is (apps, deployments, create)."""
    import ast
    import re

    source = ROOT / "svc-launcher/src/tether/launcher/k8s/_substrate.py"
    tree = ast.parse(source.read_text())
    clients: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr in _API_GROUPS
        ):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    clients[target.attr] = _API_GROUPS[node.value.func.attr]
    assert set(clients.values()) == set(_API_GROUPS.values()), clients
    calls = set()
    pattern = re.compile(r"^(list|read|create|delete|patch|replace)_namespaced_([a-z_]+?)(_log)?$")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr in clients
        ):
            match = pattern.match(node.attr)
            assert match, f"an API call the test cannot map to RBAC: {node.attr}"
            verb, resource, log = match.groups()
            plural = resource.replace("_", "") + "s" + ("/log" if log else "")
            calls.add((clients[node.value.attr], plural, _VERBS[verb]))
    return calls


def test_the_launcher_role_grants_exactly_the_calls_the_substrate_makes() -> None:
    used = _substrate_api_calls()
    assert ("apps", "deployments", "create") in used and ("", "events", "list") in used
    [role] = [d for _, d in k8s_documents() if d["kind"] == "Role"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == used, {"unused": granted - used, "missing": used - granted}
    assert not [d for _, d in k8s_documents() if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]

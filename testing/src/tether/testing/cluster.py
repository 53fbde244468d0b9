"""A JetStream cluster of three nats-server processes on loopback, for tests of
replicated streams (``TETHER_NATS_REPLICAS=3``) and of losing a node.

Every node is a :class:`~tether.testing.NatsServer` like the single test server (the
session's JWT auth config, its own store directory), plus a server name and cluster routes
to the other two, so ``kill``/``start`` of one node work as for a single server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.shared.nats import auth as natsauth
from tether.shared.nats.streams import nats_unavailable
from tether.testing import NatsServer, free_port, session_auth

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

#: The cluster's name (every node's ``--cluster_name``).
CLUSTER_NAME = "tether-test"


@dataclass
class NatsCluster:
    """Three running nats-server nodes forming one JetStream cluster.

    Attributes:
        nodes: server name (``n1``..``n3``) -> the node.
    """

    nodes: dict[str, NatsServer]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (a client given all of them survives losing any)."""
        return [node.url for node in self.nodes.values()]

    @property
    def creds(self) -> Path | None:
        """``.creds`` of the admin user (the same on every node)."""
        return next(iter(self.nodes.values())).creds

    async def connect(self, **options: Any) -> NATS:
        """A nats-py client of the admin user, given every node's URL."""
        import nats

        creds = self.creds
        if creds is not None:
            options.setdefault("user_credentials", natsauth.file_credentials(creds))
        return await nats.connect(servers=self.urls, **options)

    def name_of(self, node: NatsServer) -> str:
        """The server name of ``node``."""
        return next(name for name, each in self.nodes.items() if each is node)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every running node answers JetStream API calls, which needs the
        cluster's meta leader elected and known to that node.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        import nats

        async with asyncio.timeout(timeout):
            for node in self.nodes.values():
                if node.process.poll() is not None:
                    continue  # killed by the test
                nc = await node.connect(allow_reconnect=False)
                try:
                    js = nc.jetstream(timeout=1.0)
                    while True:
                        try:
                            await js.account_info()
                            break
                        except nats.errors.Error as err:
                            if not nats_unavailable(err):
                                raise
                            await asyncio.sleep(0.1)
                finally:
                    await nc.close()

    async def leader_of(self, stream: str, timeout: float = 30.0) -> NatsServer:
        """The node that leads ``stream`` now (waiting out an election in progress).

        Raises:
            TimeoutError: no leader within ``timeout`` seconds.
        """
        import nats

        nc = await self.connect()
        try:
            js = nc.jetstream(timeout=1.0)
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        info = await js.stream_info(stream)
                    except nats.errors.Error as err:
                        if not nats_unavailable(err):
                            raise
                    else:
                        leader = info.cluster.leader if info.cluster else None
                        if leader in self.nodes:
                            return self.nodes[leader]
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    async def wait_current(self, stream: str, timeout: float = 30.0) -> None:
        """Wait until ``stream`` has a leader and every other node's replica is current
        (caught up), e.g. after a node restarted.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        import nats

        nc = await self.connect()
        try:
            js = nc.jetstream(timeout=1.0)
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        info = await js.stream_info(stream)
                    except nats.errors.Error as err:
                        if not nats_unavailable(err):
                            raise
                    else:
                        cluster = info.cluster
                        replicas = (cluster.replicas or []) if cluster else []
                        if (
                            cluster is not None
                            and cluster.leader in self.nodes
                            and len(replicas) == len(self.nodes) - 1
                            and all(peer.current and not peer.offline for peer in replicas)
                        ):
                            return
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes.values():
            if node.process is not None:  # None: never started (a failed start)
                node.stop()


def start_nats_cluster(base_dir: Path, *, size: int = 3) -> NatsCluster:
    """Start ``size`` nats-server nodes with JetStream and the session's JWT auth under
    ``base_dir`` (``n1/``.. each node's store, ``nats-auth/`` the shared config and
    users' ``.creds``), routed to each other as one cluster. Returns once every node
    accepts client connections; call :meth:`NatsCluster.wait_ready` before JetStream use.
    """
    keys = session_auth()
    auth_dir = base_dir / "nats-auth"
    auth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    natsauth.write_secret(auth_dir / natsauth.SERVER_CONFIG, keys.server_config())
    names = [f"n{i + 1}" for i in range(size)]
    client_ports = {name: free_port() for name in names}
    route_ports = {name: free_port() for name in names}

    def args(name: str) -> Sequence[str]:
        routes = ",".join(
            f"nats://127.0.0.1:{route_ports[other]}" for other in names if other != name
        )
        return (
            "--name",
            name,
            "--cluster_name",
            CLUSTER_NAME,
            "--cluster",
            f"nats://127.0.0.1:{route_ports[name]}",
            "--routes",
            routes,
        )

    nodes = {
        name: NatsServer(
            url=f"nats://127.0.0.1:{client_ports[name]}",
            port=client_ports[name],
            store_dir=base_dir / name,
            process=None,  # type: ignore[arg-type]  # started just below
            auth=keys,
            auth_dir=auth_dir,
            args=tuple(args(name)),
        )
        for name in names
    }
    cluster = NatsCluster(nodes)
    try:
        for node in nodes.values():
            node.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster

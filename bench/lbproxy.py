"""A round-robin TCP proxy: the bench's stand-in for the load balancer in front of
control plane replicas.

``python -m bench.lbproxy --listen 127.0.0.1:8000 --backend 127.0.0.1:8001 --backend ...``

Bench-only code (never part of the product): a real deployment puts its own balancer in
front of ``tether controlplane serve --no-daemons`` replicas (a Kubernetes Service, an
ALB, nginx). This one balances like a Kubernetes Service does, per TCP connection: each
new client connection goes to the next backend in turn (skipping one that refuses the
connection), and its bytes are copied both ways until either side closes. HTTP keep-alive
connections therefore stay on one replica for their life, as behind kube-proxy.

On SIGTERM it prints how many connections each backend got and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Bytes copied per read.
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Backend:
    """One upstream ``host:port``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Backend:
        """``host:port`` -> Backend.

        Raises:
            ValueError: not ``host:port`` with a port in 1-65535.
        """
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class RoundRobin:
    """Picks backends in turn; a backend that just refused a connection is skipped for
    that connection only (no health state: the next connection tries it again).

    Raises:
        ValueError: no backends.
    """

    backends: Sequence[Backend]
    _next: int = 0
    connections: dict[Backend, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("a round-robin proxy needs at least one backend")

    def order(self) -> list[Backend]:
        """The backends to try for one new connection, the chosen one first; advances the
        turn by one (so consecutive connections start at consecutive backends)."""
        n = len(self.backends)
        start = self._next
        self._next = (self._next + 1) % n
        return [self.backends[(start + k) % n] for k in range(n)]

    def record(self, backend: Backend) -> None:
        """Count a connection that reached ``backend``."""
        self.connections[backend] = self.connections.get(backend, 0) + 1

    def summary(self) -> str:
        """``host:port=count`` for every backend, in their order."""
        return " ".join(f"{b}={self.connections.get(b, 0)}" for b in self.backends)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        # Half-close so the other direction can still finish its answer.
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _connect(
    balancer: RoundRobin,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    for backend in balancer.order():
        try:
            streams = await asyncio.open_connection(backend.host, backend.port)
        except OSError:
            continue
        balancer.record(backend)
        return streams
    return None


async def _serve_client(
    balancer: RoundRobin, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    upstream = await _connect(balancer)
    if upstream is None:  # every backend refused: the client sees the connection close
        client_w.close()
        return
    up_r, up_w = upstream
    try:
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
    finally:
        for w in (up_w, client_w):
            w.close()
            with contextlib.suppress(OSError, ConnectionError):
                await w.wait_closed()


async def start(listen: Backend, balancer: RoundRobin) -> asyncio.Server:
    """Listen on ``listen`` (port 0: a free one) and proxy each connection to the
    backend ``balancer`` picks."""
    return await asyncio.start_server(
        lambda r, w: _serve_client(balancer, r, w), listen.host, listen.port, backlog=1024
    )


async def serve(listen: Backend, backends: Sequence[Backend]) -> None:
    """Proxy connections to ``listen`` until SIGTERM/SIGINT; then print the counts."""
    balancer = RoundRobin(list(backends))
    server = await start(listen, balancer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"proxying {listen} -> {' '.join(map(str, backends))} (round robin)", flush=True)
    async with server:
        await stop.wait()
    print(f"connections: {balancer.summary()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m bench.lbproxy", description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="host:port to accept connections on")
    p.add_argument(
        "--backend", action="append", required=True, help="host:port of a backend (repeat)"
    )
    args = p.parse_args(argv)
    try:
        listen = Backend.parse(args.listen)
        backends = [Backend.parse(b) for b in args.backend]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    asyncio.run(serve(listen, backends))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

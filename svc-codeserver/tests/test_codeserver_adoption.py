"""A code server with an orphan grace outlives its killed starter while launchers adopt it
(the Adopt RPC), and stops once adoptions stop coming within the grace."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import textwrap

import grpc
import pytest
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import CODESERVER_TOKEN_ENV, bearer_metadata
from tether.shared.wire.base import decode
from tether.shared.wire.locations import LocationConfig, location_config_hash
from tether.shared.wire.process import CodeServerReady

pytestmark = pytest.mark.integration

# A stand-in launcher: starts the code server, passes on its ready line, waits to be killed.
STARTER = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen(
        [sys.executable, "-m", "tether.shared.runtime.cli", "codeserver", "grpc",
         "--location-json", sys.argv[1]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    print(child.stdout.readline().decode().strip(), flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_adoption_keeps_an_orphan_serving_until_it_stops_coming(
    examples_location: LocationConfig,
) -> None:
    token = secrets.token_hex(32)
    auth = bearer_metadata(token)
    env = {**os.environ, "TETHER_CODESERVER_ORPHAN_GRACE_S": "3", CODESERVER_TOKEN_ENV: token}
    starter = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STARTER,
        examples_location.model_dump_json(),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert starter.stdout is not None
    ready = decode(await starter.stdout.readline(), CodeServerReady)
    try:
        async with grpc.aio.insecure_channel(ready.address) as channel:
            stub = pb_grpc.CodeServerStub(channel)
            reply = await stub.Adopt(pb.AdoptRequest(launcher_id="test"), timeout=10, metadata=auth)
            assert reply.pid == ready.pid and not reply.orphaned
            assert reply.location_name == "examples"
            assert reply.config_hash == location_config_hash(examples_location)
            assert reply.orphan_grace_s == 3.0
            # The starter dies (its stderr pipe breaks); the server's grace begins.
            starter.kill()
            await starter.wait()
            # Adopted twice per grace for three graces: it keeps serving all along,
            # although the one who started it is long gone.
            for _ in range(18):
                reply = await stub.Adopt(
                    pb.AdoptRequest(launcher_id="test"), timeout=10, metadata=auth
                )
                await asyncio.sleep(0.5)
            assert reply.orphaned
            ping = await stub.Ping(pb.PingRequest(echo="still there"), timeout=10, metadata=auth)
            assert ping.echo == "still there" and ping.pid == ready.pid
        # Nobody adopts it any more: it stops by itself.
        async with asyncio.timeout(60):
            while _alive(ready.pid):
                await asyncio.sleep(0.2)
    finally:
        if starter.returncode is None:
            starter.kill()
            await starter.wait()
        if _alive(ready.pid):
            os.kill(ready.pid, signal.SIGKILL)

"""Code servers answer only their launcher: per-code-server tokens derived from the
launcher's secret, on real code servers and fork servers started by the process substrate.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from launcher_testkit import EXAMPLES_LOCATION
from tether.launcher import ProcessSubstrate
from tether.launcher.codeservers import CodeServerRegistry
from tether.launcher.tokens import CodeServerSecretError, CodeServerTokens, tokens_from_settings
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import (
    CODESERVER_TLS_CERT_ENV,
    CODESERVER_TOKEN_ENV,
    TLS_SERVER_NAME,
    bearer_metadata,
)
from tether.shared.wire.locations import LocationConfig

pytestmark = pytest.mark.integration

FIRST = EXAMPLES_LOCATION.model_copy(update={"name": "first"})
SECOND = EXAMPLES_LOCATION.model_copy(update={"name": "second"})


@pytest.fixture
async def substrate() -> AsyncIterator[ProcessSubstrate]:
    substrate = ProcessSubstrate(sys.executable, start_timeout_s=60, warm_start=True)
    yield substrate
    await substrate.aclose()


async def _status(address: str, metadata: tuple[tuple[str, str], ...], rpc: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CodeServerStub(channel)
        calls = {
            "Ping": lambda: stub.Ping(pb.PingRequest(), timeout=10, metadata=metadata),
            "GetSnapshot": lambda: stub.GetSnapshot(
                pb.GetSnapshotRequest(), timeout=10, metadata=metadata
            ),
            "Adopt": lambda: stub.Adopt(
                pb.AdoptRequest(launcher_id="intruder"), timeout=10, metadata=metadata
            ),
        }
        try:
            await calls[rpc]()
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def _proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


async def test_a_code_server_answers_its_launcher_and_refuses_everyone_else(
    substrate: ProcessSubstrate, tmp_path: Path
) -> None:
    tokens = CodeServerTokens.from_file(tmp_path / "secret")
    registry = CodeServerRegistry(substrate, tokens=tokens)
    try:
        first = await registry.ensure(FIRST)
        second = await registry.ensure(SECOND)
        # The launcher's own client is answered (its calls carry the token).
        assert (await first.get_snapshot(30)).repositories
        assert (await second.get_snapshot(30)).repositories
        assert first.token != second.token

        address = first.handle.address
        changed = FIRST.model_copy(update={"env": {"SOME_SETTING": "1"}})
        refused = {
            "no token": (),
            "the second location's token": bearer_metadata(second.token),
            "the token of another config of the same location": bearer_metadata(
                tokens.for_location(changed)
            ),
            "another launcher's token": bearer_metadata(
                CodeServerTokens.ephemeral().for_location(FIRST)
            ),
        }
        for what, metadata in refused.items():
            for rpc in ("Ping", "GetSnapshot", "Adopt"):
                code = await _status(address, metadata, rpc)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (what, rpc)
        assert await _status(address, bearer_metadata(first.token), "Ping") == grpc.StatusCode.OK

        # The token travels in the code server's environment, never on its command line;
        # its fork server (user code, and the parent of run workers) never gets it.
        pid = first.handle.pid
        assert pid is not None
        assert first.token.encode() not in _proc(pid, "cmdline")
        assert f"{CODESERVER_TOKEN_ENV}={first.token}".encode() in _proc(pid, "environ")
        assert substrate.fork_servers is not None
        fork_server = await substrate.fork_servers.ensure(FIRST, 60)
        fork_env = _proc(fork_server.spawned.process.pid, "environ")
        assert CODESERVER_TOKEN_ENV.encode() not in fork_env
    finally:
        await registry.stop_all()


def test_tokens_are_derived_per_location_and_config_from_the_secret() -> None:
    one = CodeServerTokens(b"s" * 32)
    assert one.for_location(FIRST) == CodeServerTokens(b"s" * 32).for_location(FIRST)
    assert one.for_location(FIRST) != one.for_location(SECOND)
    assert one.for_location(FIRST) != CodeServerTokens(b"t" * 32).for_location(FIRST)
    renamed = LocationConfig(**{**FIRST.model_dump(), "module": "other"})
    assert one.for_location(FIRST) != one.for_location(renamed)
    with pytest.raises(CodeServerSecretError, match="at least 32"):
        CodeServerTokens(b"short")


def test_the_secret_file_is_created_private_and_refused_when_it_is_not(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "secret"
    tokens = tokens_from_settings(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Read again, not replaced: the same tokens (what a restarted launcher relies on).
    assert tokens_from_settings(None, path).for_location(FIRST) == tokens.for_location(FIRST)
    os.chmod(path, 0o644)
    with pytest.raises(CodeServerSecretError, match="chmod 600"):
        tokens_from_settings(None, path)
    # The secret itself in the settings wins over any file.
    direct = tokens_from_settings("x" * 40, path)
    assert direct.for_location(FIRST) == CodeServerTokens(b"x" * 40).for_location(FIRST)


async def test_over_tls_the_launcher_pins_each_code_servers_own_certificate(
    tmp_path: Path,
) -> None:
    # What container substrates do (the process substrate stays plaintext on loopback);
    # shown on local processes, which serve TLS the same way.
    substrate = ProcessSubstrate(sys.executable, start_timeout_s=60)
    tokens = CodeServerTokens.from_file(tmp_path / "secret")
    registry = CodeServerRegistry(substrate, tokens=tokens, tls=True)
    try:
        first = await registry.ensure(FIRST)
        await registry.ensure(SECOND)
        assert (await first.get_snapshot(30)).repositories
        address, token = first.handle.address, first.token
        assert first.handle.pid is not None
        environ = _proc(first.handle.pid, "environ")
        assert f"{CODESERVER_TLS_CERT_ENV}=".encode() in environ  # key and cert: env only
        assert b"PRIVATE KEY" not in _proc(first.handle.pid, "cmdline")

        # Plaintext, even with the right token: refused by the TLS server.
        assert await _status(address, bearer_metadata(token), "Ping") == grpc.StatusCode.UNAVAILABLE
        # Pinning another code server's certificate: the handshake fails.
        other = tokens.tls_for_location(SECOND).cert_pem
        assert await _tls_ping(address, other, token) == grpc.StatusCode.UNAVAILABLE
        # A restarted launcher derives the same certificate and token: answered.
        again = CodeServerTokens.from_file(tmp_path / "secret").tls_for_location(FIRST)
        assert again == tokens.tls_for_location(FIRST)  # the very same bytes
        assert await _tls_ping(address, again.cert_pem, token) == grpc.StatusCode.OK
        # TLS does not replace the token.
        assert await _tls_ping(address, again.cert_pem, None) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await registry.stop_all()
        await substrate.aclose()


async def _tls_ping(address: str, cert: bytes, token: str | None) -> grpc.StatusCode:
    options = [("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
    credentials = grpc.ssl_channel_credentials(root_certificates=cert)
    metadata = bearer_metadata(token) if token else ()
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        try:
            await pb_grpc.CodeServerStub(channel).Ping(
                pb.PingRequest(), timeout=10, metadata=metadata
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK

"""Fixtures of the code server / run worker tests: example locations and process helpers."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import croniter  # noqa: F401  (see below)
import grpc
import pytest
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import CODESERVER_TOKEN_ENV, bearer_metadata
from tether.shared.grpc.convert import channel_options
from tether.shared.wire.base import decode
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import CodeServerReady

# Importing croniter runs `file` on the interpreter (platform.architecture()); it is
# imported here, at collection, so the first unit test to tick a cron does not start a
# process (which a unit test may not).

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture
def examples_location() -> LocationConfig:
    """The example code location (module ``example_jobs`` in ``examples/``)."""
    return LocationConfig(name="examples", module="example_jobs", working_directory=str(EXAMPLES))


@pytest.fixture
def broken_location() -> LocationConfig:
    """A location whose import raises."""
    return LocationConfig(name="broken", python_file=str(EXAMPLES / "broken_location.py"))


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``tether <args>`` the way other services do, with piped stdout/stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "tether.shared.runtime.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def spawn_tether() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start tether sub-commands; any still running at teardown are killed."""
    started: list[subprocess.Popen[str]] = []

    def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = _spawn(args, env)
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


class _Authenticated(grpc.UnaryUnaryClientInterceptor):
    """Adds the code server's token to every call, as a launcher does."""

    def __init__(self, token: str) -> None:
        self._metadata = bearer_metadata(token)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        details = client_call_details._replace(
            metadata=(*(client_call_details.metadata or ()), *self._metadata)
        )
        return continuation(details, request)


def new_token() -> str:
    """A fresh caller token for one code server."""
    return secrets.token_hex(32)


class RunningCodeServer:
    """A code server process plus a stub connected to the address it announced.

    The stub's channel allows large messages (:func:`channel_options`), as launchers' must,
    and presents the server's token on every call (``raw_channel`` presents none).

    Attributes:
        token: the caller token the server was started with.
        auth: the metadata that presents it.
    """

    def __init__(self, process: subprocess.Popen[str], token: str) -> None:
        self.process = process
        self.token = token
        self.auth = bearer_metadata(token)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"no ready line; stderr: {self.process.communicate()[1]}")
        self.ready = decode(line, CodeServerReady)
        self.raw_channel = grpc.insecure_channel(self.ready.address, options=channel_options())
        self.channel = grpc.intercept_channel(self.raw_channel, _Authenticated(token))
        self.stub = pb_grpc.CodeServerStub(self.channel)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM the server; return (exit code, rest of stdout, stderr)."""
        self.raw_channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return self.process.returncode, out, err


@pytest.fixture
def server_for(spawn_tether) -> Iterator[Callable[..., RunningCodeServer]]:
    """Start ``tether codeserver grpc`` for a location; stopped at teardown."""
    started: list[RunningCodeServer] = []

    def start(location: LocationConfig, env: dict[str, str] | None = None) -> RunningCodeServer:
        args = ["codeserver", "grpc", "--location-json", location.model_dump_json()]
        token = new_token()
        server = RunningCodeServer(
            spawn_tether(args, {CODESERVER_TOKEN_ENV: token, **(env or {})}), token
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def module_server_for() -> Iterator[Callable[..., RunningCodeServer]]:
    """Like ``server_for``, but servers live for the whole test module (cheaper)."""
    started: list[RunningCodeServer] = []

    def start(location: LocationConfig, env: dict[str, str] | None = None) -> RunningCodeServer:
        args = ["codeserver", "grpc", "--location-json", location.model_dump_json()]
        token = new_token()
        server = RunningCodeServer(
            _spawn(args, {CODESERVER_TOKEN_ENV: token, **(env or {})}), token
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

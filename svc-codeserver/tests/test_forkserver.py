"""The fork server (``tether codeserver forkserver``) as a real process, spoken to directly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tether.codeserver.forkserver import SourceFiles
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, new_id
from tether.shared.wire.errors import ContractError
from tether.shared.wire.forkserver import (
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    ForkExited,
    ForkRefused,
    ForkRequest,
    ForkServerReady,
    ForkStarted,
    decode_frame_length,
    decode_reply,
    decode_request,
    encode_frame,
    warm_start_allowed,
)
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs
from tether.shared.wire.work import LaunchRunPayload
from tether.testing import nats_connect

SLOW_LOCATION = """
import time
from pathlib import Path
from pydantic import BaseModel
from tether.sdk import Definitions, job, op

class Marker(BaseModel):
    path: str

@op
def wait_for_marker(config: Marker) -> None:
    deadline = time.monotonic() + 60
    while not Path(config.path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)

@job
def slow():
    wait_for_marker()

defs = Definitions(jobs=[slow])
"""

THREADED_LOCATION = """
import threading, time
from tether.sdk import Definitions
threading.Thread(target=time.sleep, args=(60,), daemon=True, name="user-thread").start()
defs = Definitions(jobs=[])
"""


def test_frames_round_trip_and_reject_bad_input(examples_location: LocationConfig) -> None:
    args = ExecuteRunArgs(
        location=examples_location,
        run=LaunchRunPayload(run_id=new_id(), job_name="hello"),
        nats_url="nats://127.0.0.1:4222",
    )
    request = ForkRequest(args=args, env={"TRACEPARENT": "00-x"})
    frame = encode_frame(request)
    assert decode_frame_length(frame[: FRAME_HEADER.size]) == len(frame) - FRAME_HEADER.size
    assert decode_request(frame[FRAME_HEADER.size :]) == request
    reply = encode_frame(ForkExited(pid=7, exit_code=-9))
    assert decode_reply(reply[FRAME_HEADER.size :]) == ForkExited(pid=7, exit_code=-9)
    with pytest.raises(ContractError):
        decode_frame_length(FRAME_HEADER.pack(MAX_FRAME_BYTES + 1))
    with pytest.raises(ContractError):
        decode_frame_length(b"\x00")
    with pytest.raises(ContractError):
        decode_reply(b'{"type": "tether.v1.fork_started"}')
    assert warm_start_allowed(examples_location)
    opted_out = examples_location.model_copy(update={"env": {"TETHER_WARM_START": "false"}})
    assert not warm_start_allowed(opted_out)


def test_source_files_notice_a_changed_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "changing_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from changing_pkg.jobs import VALUE\n")
    (package / "jobs.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "changing_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "changing_pkg.jobs", raising=False)
    import changing_pkg  # noqa: F401

    location = LocationConfig(name="changing", module="changing_pkg")
    sources = SourceFiles.snapshot(location)
    assert sorted(Path(p).name for p in sources.stamps) == ["__init__.py", "jobs.py"]
    assert sources.changed() is None
    (package / "jobs.py").write_text("VALUE = 22\n")
    assert sources.changed() == str((package / "jobs.py").resolve())
    sys.modules.pop("changing_pkg.jobs", None)


class ForkServerProcess:
    """A fork server subprocess and its ready line."""

    def __init__(self, proc: subprocess.Popen[str], ready: ForkServerReady) -> None:
        self.proc = proc
        self.ready = ready

    def request(self, payload: bytes) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(self.ready.socket_path)
        sock.sendall(payload)
        return sock


def read_reply(sock: socket.socket) -> ForkStarted | ForkRefused | ForkExited | None:
    """The next reply, or None at EOF."""
    stream = sock.makefile("rb")
    header = stream.read(FRAME_HEADER.size)
    if not header:
        return None
    return decode_reply(stream.read(decode_frame_length(header)))


@pytest.fixture
def start_fork_server(
    spawn_tether: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> Iterator[Callable[[LocationConfig], ForkServerProcess]]:
    def start(location: LocationConfig) -> ForkServerProcess:
        sock = str(tmp_path / f"{location.name}.sock")
        proc = spawn_tether(
            ["codeserver", "forkserver", "--location-json", location.model_dump_json()]
            + ["--socket", sock]
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate()[1]
        return ForkServerProcess(proc, decode(line, ForkServerReady))

    yield start


async def _declare(url: str) -> None:
    nc = await nats_connect(url)
    js = nc.jetstream()
    for stream in (Stream.EVENTS, Stream.LOGS):
        await ensure_stream(js, STREAMS[stream])
    await nc.close()


@pytest.mark.integration
async def test_fork_server_refuses_bad_requests_and_survives_its_children(
    nats_server,
    start_fork_server: Callable[[LocationConfig], ForkServerProcess],
    tmp_path: Path,
) -> None:
    await _declare(nats_server.url)
    (tmp_path / "slow_fs_location.py").write_text(SLOW_LOCATION)
    location = LocationConfig(
        name="slowfs", module="slow_fs_location", working_directory=str(tmp_path)
    )
    server = start_fork_server(location)
    assert server.ready.location_loaded and server.ready.pid == server.proc.pid

    # Garbage and a request for another location: refused, and the server keeps serving.
    bad = server.request(FRAME_HEADER.pack(5) + b"nope!")
    assert isinstance(read_reply(bad), ForkRefused)
    other = location.model_copy(update={"name": "other"})
    marker = tmp_path / "marker"
    config = {"ops": {"wait_for_marker": {"config": {"path": str(marker)}}}}

    def request_for(loc: LocationConfig) -> bytes:
        run_id = new_id()
        args = ExecuteRunArgs(
            location=loc,
            run=LaunchRunPayload(run_id=run_id, job_name="slow", run_config=config),
            nats_url=nats_server.url,
        )
        # The run's own NATS user reaches the forked worker in the request's env.
        return encode_frame(ForkRequest(args=args, env=nats_server.run_worker_env(run_id)))

    refused = read_reply(server.request(request_for(other)))
    assert isinstance(refused, ForkRefused) and "location" in refused.reason

    conn = server.request(request_for(location))
    started = await asyncio.to_thread(read_reply, conn)
    assert isinstance(started, ForkStarted)
    # The child leads its own session: not the fork server's group.
    assert os.getpgid(started.pid) == started.pid == os.getsid(started.pid)

    # The fork server stops; the run goes on and reports its own exit when it ends.
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    os.killpg(started.pid, 0)
    assert not await asyncio.to_thread(os.path.exists, server.ready.socket_path)
    marker.write_text("go")
    exited = await asyncio.to_thread(read_reply, conn)
    assert exited == ForkExited(pid=started.pid, exit_code=0)


@pytest.mark.integration
def test_location_starting_threads_is_refused(
    spawn_tether: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    (tmp_path / "threaded_location.py").write_text(THREADED_LOCATION)
    location = LocationConfig(
        name="threaded", module="threaded_location", working_directory=str(tmp_path)
    )
    proc = spawn_tether(
        ["codeserver", "forkserver", "--location-json", location.model_dump_json()]
        + ["--socket", str(tmp_path / "t.sock")]
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4
    assert out == ""
    assert "user-thread" in err and "single-threaded" in err


ORPHANING_PARENT = """
import subprocess, sys, time
proc = subprocess.Popen(
    [sys.executable, "-m", "tether.shared.runtime.cli", "codeserver", "forkserver",
     "--location-json", sys.argv[1], "--socket", sys.argv[2]],
    stdout=subprocess.PIPE, text=True,
)
print(proc.pid, proc.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


@pytest.mark.integration
async def test_fork_server_stops_when_its_launcher_dies(
    examples_location: LocationConfig, tmp_path: Path
) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ORPHANING_PARENT,
        examples_location.model_dump_json(),
        str(tmp_path / "orphan.sock"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert parent.stdout is not None
    line = (await asyncio.wait_for(parent.stdout.readline(), 60)).decode()
    pid = int(line.split()[0])
    assert "fork_server_ready" in line
    parent.kill()
    await parent.wait()
    # Reparented, it notices within a second and exits (a zombie, if nobody reaps it).
    async with asyncio.timeout(30):
        while _running(pid):
            await asyncio.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False

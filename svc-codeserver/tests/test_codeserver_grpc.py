"""The gRPC code server as a real subprocess, spawned the way launchers spawn it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc.convert import error_from_proto, snapshot_from_proto
from tether.shared.messages import LocationConfig

pytestmark = pytest.mark.integration


def test_ping_and_snapshot(server_for, examples_location) -> None:
    server = server_for(examples_location)
    assert server.ready.pid == server.process.pid
    assert server.ready.address.startswith("127.0.0.1:")
    ping = server.stub.Ping(pb.PingRequest(echo="hi"), timeout=10)
    assert (ping.echo, ping.location_name, ping.loaded, ping.pid) == (
        "hi",
        "examples",
        True,
        server.process.pid,
    )
    assert not ping.HasField("load_error")
    reply = server.stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=10)
    assert reply.WhichOneof("result") == "snapshot"
    snap = snapshot_from_proto(reply.snapshot)
    assert [j.name for j in snap.repositories[0].jobs][:4] == [
        "hello",
        "fails",
        "configured",
        "fan_out_fan_in",
    ]
    code, rest_of_stdout, _ = server.stop()
    assert code == 0
    assert rest_of_stdout == ""  # exactly one line on stdout


def test_broken_location_still_answers_with_its_load_error(server_for, broken_location) -> None:
    server = server_for(broken_location)
    ping = server.stub.Ping(pb.PingRequest(), timeout=10)
    assert not ping.loaded
    error = error_from_proto(ping.load_error)
    assert error.cls_name == "RuntimeError"
    assert "fails on import on purpose" in error.message
    assert "broken_location.py" in error.traceback
    reply = server.stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=10)
    assert reply.WhichOneof("result") == "error"
    assert error_from_proto(reply.error) == error


def test_user_prints_never_reach_stdout(server_for, tmp_path: Path) -> None:
    path = tmp_path / "chatty.py"
    path.write_text(
        "import os\n"
        "print('printed at import')\n"
        "os.system('echo from a subprocess')\n"
        "from tether.sdk import Definitions\n"
        "defs = Definitions()\n"
    )
    server = server_for(LocationConfig(name="chatty", python_file=str(path)))
    assert server.stub.Ping(pb.PingRequest(), timeout=10).loaded
    code, rest_of_stdout, stderr = server.stop()
    assert code == 0 and rest_of_stdout == ""
    assert "printed at import" in stderr and "from a subprocess" in stderr


def test_malformed_location_json_is_a_clear_error(spawn_tether) -> None:
    proc = spawn_tether(["codeserver", "grpc", "--location-json", '{"name": 5}'])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    assert "invalid --location-json" in err

"""The gRPC code server as a real subprocess, spawned the way launchers spawn it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc import codeserver_pb2_grpc as pb_grpc
from tether.shared.grpc.auth import CODESERVER_TOKEN_ENV, bearer_metadata
from tether.shared.grpc.convert import error_from_proto, snapshot_from_proto
from tether.shared.wire.locations import LocationConfig

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


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_only_callers_with_the_token_are_answered(server_for, examples_location) -> None:
    server = server_for(examples_location)
    raw = pb_grpc.CodeServerStub(server.raw_channel)
    wrong = bearer_metadata(secrets.token_hex(32))
    calls = {
        "Ping": lambda **kw: raw.Ping(pb.PingRequest(), timeout=10, **kw),
        "GetSnapshot": lambda **kw: raw.GetSnapshot(pb.GetSnapshotRequest(), timeout=10, **kw),
        "Adopt": lambda **kw: raw.Adopt(pb.AdoptRequest(launcher_id="x"), timeout=10, **kw),
        "EvaluateSensor": lambda **kw: raw.EvaluateSensor(
            pb.EvaluateSensorRequest(sensor_name="s"), timeout=10, **kw
        ),
    }
    presented = {
        "none": (),
        "another token": wrong,
        "the token without its scheme": (("authorization", server.token),),
        "the token twice, once wrong": (*server.auth, *wrong),
    }
    for name, call in calls.items():
        for what, metadata in presented.items():
            code = _code(lambda call=call, metadata=metadata: call(metadata=metadata))
            assert code == grpc.StatusCode.UNAUTHENTICATED, (name, what)
    # The right token: answered.
    assert raw.Ping(pb.PingRequest(echo="ok"), timeout=10, metadata=server.auth).echo == "ok"
    # Probes cannot send metadata: the health service is open (it only says SERVING).
    health = health_pb2_grpc.HealthStub(server.raw_channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_code_server_without_a_token_refuses_to_start(examples_location) -> None:
    env = {k: v for k, v in os.environ.items() if k != CODESERVER_TOKEN_ENV}
    command = [sys.executable, "-m", "tether.shared.runtime.cli", "codeserver", "grpc"]
    command += ["--location-json", examples_location.model_dump_json()]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""  # no ready line: nothing listens
    assert f"{CODESERVER_TOKEN_ENV} is not set" in proc.stderr
    # Half a TLS configuration is refused the same way, not served in plaintext.
    env |= {CODESERVER_TOKEN_ENV: secrets.token_hex(32), "TETHER_CODESERVER_TLS_CERT": "x"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "TETHER_CODESERVER_TLS_KEY, or neither" in proc.stderr


CURIOUS_LOCATION = """
import os, subprocess, sys
from tether.sdk import Definitions

probe = "import os; print(repr(os.environ.get('TETHER_CODESERVER_TOKEN')))"
with open(os.environ["SEEN_FILE"], "w") as f:
    f.write(repr(os.environ.get("TETHER_CODESERVER_TOKEN")) + "\\n")
    f.flush()
    subprocess.run([sys.executable, "-c", probe], stdout=f, check=True)

defs = Definitions()
"""


def test_the_location_code_does_not_see_the_token(server_for, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    path = tmp_path / "curious.py"
    path.write_text(CURIOUS_LOCATION)
    server = server_for(
        LocationConfig(name="curious", python_file=str(path)), {"SEEN_FILE": str(seen)}
    )
    assert server.stub.Ping(pb.PingRequest(), timeout=10).loaded
    # Neither the code nor a process it starts finds it; the server still checks it.
    assert seen.read_text().split() == ["None", "None"]
    assert CODESERVER_TOKEN_ENV in CURIOUS_LOCATION

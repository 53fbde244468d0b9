"""The command lines every substrate starts code servers, fork servers and run workers with."""

from __future__ import annotations

from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import (
    ExecuteRunArgs,
    code_server_argv,
    fork_server_argv,
    run_worker_argv,
)
from tether.shared.wire.work import LaunchRunPayload

LOCATION = LocationConfig(name="loc", module="pkg.defs", env={"SECRET": "s3cr3t"})


def test_argv_carries_env_names_never_values() -> None:
    args = ExecuteRunArgs(
        location=LOCATION,
        run=LaunchRunPayload(run_id="r1", job_name="j"),
        nats_url="nats://127.0.0.1:4222",
    )
    for argv in (
        code_server_argv("py", LOCATION),
        fork_server_argv("py", LOCATION, "/tmp/s.sock"),
        run_worker_argv("py", args),
    ):
        assert argv[:3] == ["py", "-m", "tether.shared.runtime.cli"]
        assert "s3cr3t" not in " ".join(argv) and "SECRET" in " ".join(argv)
    worker = run_worker_argv("py", args)
    assert worker[3:5] == ["api", "execute-run"]
    assert ExecuteRunArgs.model_validate_json(worker[5]).location.env == {"SECRET": ""}


def test_code_server_and_fork_server_options() -> None:
    assert code_server_argv("py", LOCATION)[3:6] == ["codeserver", "grpc", "--location-json"]
    bound = code_server_argv("py", LOCATION, host="0.0.0.0", port=4000)
    assert bound[-4:] == ["--host", "0.0.0.0", "--port", "4000"]
    fork = fork_server_argv("py", LOCATION, "/tmp/s.sock", (5, 6))
    assert fork[3:5] == ["codeserver", "forkserver"]
    assert fork[-6:] == ["--socket", "/tmp/s.sock", "--stdout-fd", "5", "--stderr-fd", "6"]

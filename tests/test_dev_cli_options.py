"""``tether dev``'s options reach the stack it starts: PostgreSQL instead of SQLite, a NATS
cluster, several processes of an agent service; bad values get a clear error.

The stack itself is exercised with real parts elsewhere (``test_dev_command.py`` through the
CLI, ``test_dev_stack_postgres.py`` and the NATS cluster tests in ``test_resilience.py``);
here the stack's start is replaced so that only the wiring is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.dev import cli
from tether.dev.stack import StackConfig, StackError


class RefusingStack:
    """A DevStack stand-in that refuses to start, after noting its config."""

    configs: list[StackConfig] = []

    def __init__(self, config: StackConfig) -> None:
        self.configs.append(config)

    def start(self, progress: Any = None) -> None:
        raise StackError("not started in this test")

    def stop(self) -> None:
        pass


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[StackConfig]:
    RefusingStack.configs = []
    monkeypatch.setattr(cli, "DevStack", RefusingStack)
    return RefusingStack.configs


def _dev(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    # A wide terminal: rich's error panel would otherwise fold the messages.
    return CliRunner().invoke(
        cli.app,
        ["--home", str(tmp_path), "--quiet", *args],
        env={"COLUMNS": "400", **(env or {})},
        catch_exceptions=False,
    )


def test_defaults_are_one_nats_server_sqlite_and_one_process_each(
    tmp_path: Path, started: list[StackConfig]
) -> None:
    result = _dev(tmp_path)
    assert result.exit_code == 1 and "not started in this test" in result.output
    (config,) = started
    assert config.nats_cluster == () and config.replicas == {} and config.on_sqlite


def test_postgres_a_nats_cluster_and_scaled_services(
    tmp_path: Path, started: list[StackConfig]
) -> None:
    url = "postgresql+psycopg://tether:secret@127.0.0.1:5432/tether"
    result = _dev(
        tmp_path,
        "--nats-port",
        "14222",
        "--nats-nodes",
        "3",
        "--nats-route-port",
        "16222",
        "--scale",
        "launcher=2",
        "--scale",
        "eventrelay=3",
        env={"TETHER_DEV_DATABASE_URL": url},
    )
    assert result.exit_code == 1, result.output
    (config,) = started
    assert config.database_url == url and not config.on_sqlite
    assert config.nats_cluster == ((14222, 16222), (14223, 16223), (14224, 16224))
    assert config.nats_url == ",".join(f"nats://127.0.0.1:{p}" for p in (14222, 14223, 14224))
    assert config.replicas == {"launcher": 2, "eventrelay": 3}


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("launcher", "expected SERVICE=N"),
        ("controlplane=2", "expected SERVICE=N with SERVICE one of poller, launcher"),
        ("launcher=0", "N must be a whole number from 1 to 9"),
        ("launcher=two", "N must be a whole number from 1 to 9"),
        ("launcher=10", "N must be a whole number from 1 to 9"),
    ],
)
def test_a_bad_scale_is_refused_before_anything_starts(
    tmp_path: Path, started: list[StackConfig], spec: str, complaint: str
) -> None:
    result = _dev(tmp_path, "--scale", spec)
    assert result.exit_code == 2 and not started
    assert complaint in result.output, result.output


def test_nats_nodes_outside_the_range_are_refused(
    tmp_path: Path, started: list[StackConfig]
) -> None:
    result = _dev(tmp_path, "--nats-nodes", "0")
    assert result.exit_code == 2 and not started and "--nats-nodes" in result.output

"""Fixtures of the code server / run worker tests: example locations and process helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tether.shared.messages import LocationConfig

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
        [sys.executable, "-m", "tether.shared.cli", *args],
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

"""tether-client installs without the control plane's server stack."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]

#: What a laptop running ``tether run launch`` must not have to install.
SERVER_STACK = {
    "tether-controlplane",
    "sqlalchemy",
    "strawberry-graphql",
    "graphql-core",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "psycopg",
    "psycopg-binary",
    "grpcio-tools",
    "uvicorn",
    "starlette",
    "jinja2",
}


def _closure(name: str) -> set[str]:
    """The distributions ``name`` needs, recursively, as installed here (no extras)."""
    seen: set[str] = set()
    todo = [canonicalize_name(name)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            requires = distribution(current).requires or []
        except PackageNotFoundError:
            continue  # a marker-excluded or optional dependency that is not installed
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_the_dependency_tree_has_no_server_stack() -> None:
    needed = _closure("tether-client")
    assert {"tether-shared", "httpx", "typer"} <= needed
    assert not needed & SERVER_STACK, sorted(needed & SERVER_STACK)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")
def test_installs_alone_and_runs(tmp_path: Path) -> None:
    """A fresh venv with only ./client and ./shared (their dependencies from the index) has
    the user commands and none of the server stack."""
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    subprocess.run(["uv", "venv", "-q", str(venv)], check=True, timeout=60)
    subprocess.run(
        ["uv", "pip", "install", "-q", "--python", str(python), "./client", "./shared"],
        cwd=ROOT,
        check=True,
        timeout=240,
    )
    helped = subprocess.run(
        [str(venv / "bin" / "tether"), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    assert "launch" in helped.stdout and "reexecute" in helped.stdout
    listed = subprocess.run(
        ["uv", "pip", "list", "--format", "json", "--python", str(python)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    installed = {canonicalize_name(d["name"]) for d in json.loads(listed)}
    assert {"tether-client", "tether-shared"} <= installed
    assert not installed & SERVER_STACK, sorted(installed & SERVER_STACK)

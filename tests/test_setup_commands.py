"""The README's set-up commands work where the system Python refuses ``pip install`` (PEP 668,
as on Debian 12 and Ubuntu 24.04, with or without python3-venv) and with a pip-capable Python,
and ``.ci/run`` runs the README's test command verbatim.

Each case runs the commands' uv bootstrap (everything before ``.venv-uv/bin/uv run``) in a
temp directory with ``python3`` on PATH being the interpreter under test, and checks that the
uv it installs runs. Under test: Debian's own ``/usr/bin/python3``; a copy of it without
``ensurepip`` (what a Debian without python3-venv has); the base interpreter of the tests'
venv. The command the README replaced (``python3 -m pip install uv``) is tried with
``--dry-run``, which never installs anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tether.testing import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = Path("/usr/bin/python3")
UV_RUN = " && .venv-uv/bin/uv run "
IS_MANAGED = (
    "import os, sys, sysconfig; print(sys.prefix == sys.base_prefix and "
    "os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"
)


def readme_commands() -> list[str]:
    """The two commands of the README's "Get started" code block."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Get started\n.*?```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no Get started bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def bootstrap() -> str:
    """The uv bootstrap both README commands start with."""
    commands = readme_commands()
    assert [c.split(UV_RUN)[1] for c in commands] == ["tether dev", "pytest"], commands
    first, second = (c.split(UV_RUN)[0] for c in commands)
    assert first == second
    return first


def run(command: str, cwd: Path, python: Path) -> str:
    """``command`` under sh with ``python3`` on PATH being ``python``; its output."""
    shim = cwd / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "python3").write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    (shim / "python3").chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "PIP_BREAK_SYSTEM_PACKAGES"}
    }
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def externally_managed(python: Path) -> bool:
    done = subprocess.run([str(python), "-c", IS_MANAGED], capture_output=True, text=True)
    return done.stdout.strip() == "True"


def assert_bootstrap_installs_uv(tmp_path: Path, python: Path) -> None:
    out = run(bootstrap(), tmp_path, python)
    assert out.startswith("exit 0"), out
    out = run(".venv-uv/bin/uv --version", tmp_path, python)
    assert out.startswith("exit 0\nuv "), out


@pytest.fixture
def debian_python() -> Path:
    """Debian's own python3, which PEP 668 keeps from ``pip install`` outside a venv."""
    if not (DEBIAN_PYTHON.exists() and externally_managed(DEBIAN_PYTHON)):
        skip_or_fail(f"{DEBIAN_PYTHON} marked EXTERNALLY-MANAGED (a Debian 12 / Ubuntu 24.04)")
    return DEBIAN_PYTHON


@pytest.mark.integration
def test_the_bootstrap_works_where_pip_install_is_refused(
    tmp_path: Path, debian_python: Path
) -> None:
    old = run("python3 -m pip install --dry-run uv", tmp_path, debian_python)
    assert not old.startswith("exit 0") and "externally-managed-environment" in old, old
    assert_bootstrap_installs_uv(tmp_path, debian_python)


@pytest.fixture
def debian_python_without_venv(tmp_path: Path, debian_python: Path) -> Path:
    """Debian's python3 as it is without python3-venv (whose one file is the stdlib's
    ``ensurepip``): a copy of the interpreter whose prefix links every stdlib entry but
    ``ensurepip``, and Debian's dist-packages (its pip, its EXTERNALLY-MANAGED marker)."""
    where = subprocess.run(
        [
            str(debian_python),
            "-c",
            "import sys, sysconfig; print(sys.prefix, sysconfig.get_path('stdlib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    prefix, stdlib = (Path(p) for p in where.stdout.split())
    root = tmp_path / "python-without-venv"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(debian_python.resolve(), root / "bin" / "python3")
    copy_stdlib = root / stdlib.relative_to(prefix)
    copy_stdlib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "ensurepip":
            (copy_stdlib / entry.name).symlink_to(entry)
    dist_packages = prefix / "lib" / "python3" / "dist-packages"
    (root / "lib" / "python3").mkdir()
    (root / "lib" / "python3" / "dist-packages").symlink_to(dist_packages)
    return root / "bin" / "python3"


@pytest.mark.integration
def test_the_bootstrap_works_without_python3_venv(
    tmp_path: Path, debian_python_without_venv: Path
) -> None:
    python = debian_python_without_venv
    probe = run("python3 -m venv probe", tmp_path, python)
    assert not probe.startswith("exit 0") and "ensurepip is not" in probe, probe
    old = run("python3 -m pip install --dry-run uv", tmp_path, python)
    assert "externally-managed-environment" in old, old
    assert_bootstrap_installs_uv(tmp_path, python)


def _pip_capable_python(tmp_path: Path) -> Path:
    """The tests' base interpreter when it has a pip of its own and no PEP 668 marker (pyenv,
    python.org), else a virtual environment seeded with pip (what a user inside a venv or
    conda has): either way a Python on which `pip install` works."""
    python = Path(getattr(sys, "_base_executable", sys.executable))
    has_pip = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True)
    if has_pip.returncode == 0 and not externally_managed(python):
        return python
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        skip_or_fail("uv (to seed a pip-capable virtual environment)")
    venv = tmp_path / "pip-capable"
    subprocess.run([uv, "venv", "-q", "--seed", "--python", str(python), str(venv)], check=True)
    return venv / "bin" / "python"


@pytest.mark.integration
def test_the_bootstrap_works_with_a_pip_capable_python(tmp_path: Path) -> None:
    python = _pip_capable_python(tmp_path)
    old = run("python3 -m pip install --dry-run uv", tmp_path, python)
    assert old.startswith("exit 0"), old
    assert_bootstrap_installs_uv(tmp_path, python)


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci

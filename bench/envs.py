"""Virtual environments the harness installs for itself: one per peer, one for tools.

Peers are never project dependencies: each gets its own venv under the cache directory,
installed with ``uv pip`` from PyPI at the pinned versions below, and reused while its
recorded spec is unchanged. The tools venv holds matplotlib (the chart) and py-spy /
pyinstrument (profiling), so none of them touches Tether's own environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: What each environment installs. Versions are the ones measured; change them here.
SPECS: dict[str, tuple[str, ...]] = {
    "dagster": ("dagster==1.13.27", "dagster-webserver==1.13.27"),
    # FastAPI >= 0.151 breaks Prefect 3.8.8's server (see /work/shared/PEERS.md). SQLAlchemy
    # 2.1 breaks its scheduler service (bulk insert of scheduled flow runs: "Can't evaluate
    # bulk DML statement"), so cron deployments never get runs.
    "prefect": ("prefect==3.8.8", "fastapi<=0.150.0", "sqlalchemy<2.1"),
    "tools": ("matplotlib>=3.8", "py-spy>=0.4", "pyinstrument>=5"),
}


class EnvError(RuntimeError):
    """A benchmark environment could not be created."""


def cache_dir() -> Path:
    """Root of the harness's cache: ``$TETHER_BENCH_CACHE`` or ``~/.cache/tether-bench``."""
    explicit = os.environ.get("TETHER_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tether-bench"


@dataclass(frozen=True)
class Env:
    """One installed environment."""

    name: str
    root: Path

    @property
    def python(self) -> Path:
        """Its interpreter."""
        return self.root / "bin" / "python"

    def bin(self, command: str) -> Path:
        """A console script of the environment."""
        return self.root / "bin" / command

    def version(self, distribution: str) -> str:
        """Installed version of ``distribution`` (asks the env's own interpreter)."""
        out = subprocess.run(
            [
                str(self.python),
                "-c",
                f"import importlib.metadata as m; print(m.version({distribution!r}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()


def ensure(name: str, log: Callable[[str], None] = print) -> Env:
    """Create (or reuse) the environment ``name`` from :data:`SPECS`.

    The base interpreter is the one running the harness (same minor version for all).
    """
    spec = SPECS[name]
    root = cache_dir() / "venvs" / name
    marker = root / ".bench-spec"
    wanted = "\n".join((*spec, "bytecode compiled"))
    if marker.exists() and marker.read_text() == wanted and (root / "bin" / "python").exists():
        return Env(name, root)
    uv = shutil.which("uv")
    if uv is None:
        raise EnvError("uv is needed to install the peers (https://docs.astral.sh/uv/)")
    log(f"installing {name} environment: {' '.join(spec)} into {root}")
    base_python = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    steps = [
        [uv, "venv", "--quiet", "--allow-existing", "--python", str(base_python), str(root)],
        [uv, "pip", "install", "--quiet", "--python", str(root / "bin" / "python"), *spec],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise EnvError(f"{' '.join(step)} failed:\n{done.stderr[-3000:]}")
    compile_bytecode(root / "bin" / "python")
    marker.write_text(wanted)
    return Env(name, root)


def compile_bytecode(python: Path, *extra: Path) -> None:
    """Byte-compile the interpreter's site-packages (and ``extra`` dirs) once, ahead of time.

    ``uv pip install`` writes no ``.pyc`` files, and where ``PYTHONDONTWRITEBYTECODE`` is set
    (as on this machine) no import ever writes them: every fresh interpreter then compiles
    every module it imports from source, which doubles the import cost of Tether's run
    worker and inflates the peers even more. Real deployments ship bytecode (pip compiles
    at install, images are built that way), so every environment is compiled before it is
    measured. Up-to-date files are skipped, so this is cheap after the first time.
    """
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Exit code ignored: some packages ship files that do not compile on purpose (tests of
    # syntax errors, py2 leftovers); they are never imported.
    subprocess.run(
        [str(python), "-m", "compileall", "-q", "-j", "0", purelib, *map(str, extra)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

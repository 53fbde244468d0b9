"""Noticing that a location's code changed on disk since a fork server imported it.

A fork server serves the code as it was when it started; the cold path would import the
new code. So before each fork the fork server compares the files of the location's
imported modules with what it loaded, and refuses (the launcher starts that run cold and
restarts the fork server) once one changed.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tether.shared.wire.locations import LocationConfig


def _roots(location: LocationConfig) -> list[Path]:
    roots: list[Path] = []
    if location.working_directory:
        roots.append(Path(location.working_directory).resolve())
    if location.python_file:
        path = Path(location.python_file)
        if not path.is_absolute() and location.working_directory:
            path = Path(location.working_directory) / path
        roots.append(path.resolve().parent)
    if location.module:
        top = sys.modules.get(location.module.partition(".")[0])
        file = getattr(top, "__file__", None)
        if file:
            # A package: its directory; a single module: the directory holding it would
            # also cover unrelated modules, so only its own file.
            path = Path(file).resolve()
            roots.append(path.parent if path.name == "__init__.py" else path)
    return roots


def _library_dirs() -> list[Path]:
    # Installed libraries are not "the location's code", even when a virtualenv sits
    # inside the working directory.
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    paths = {Path(p).resolve() for n in names if (p := sysconfig.get_paths().get(n))}
    return sorted(paths)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class SourceFiles:
    """Size and mtime of each file of the location's imported modules.

    Attributes:
        stamps: path -> (mtime_ns, size) when the snapshot was taken.
    """

    stamps: dict[str, tuple[int, int]]

    @classmethod
    def snapshot(cls, location: LocationConfig) -> SourceFiles:
        """Record the files of every imported module under the location's roots."""
        roots = _roots(location)
        libraries = _library_dirs()
        stamps: dict[str, tuple[int, int]] = {}
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if not file:
                continue
            path = Path(file).resolve()
            if not any(_within(path, root) for root in roots):
                continue
            if any(_within(path, lib) for lib in libraries):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamps[str(path)] = (st.st_mtime_ns, st.st_size)
        return cls(stamps)

    def changed(self) -> str | None:
        """The first file that changed or disappeared since the snapshot, if any."""
        for path, stamp in self.stamps.items():
            try:
                st = os.stat(path)
            except OSError:
                return path
            if (st.st_mtime_ns, st.st_size) != stamp:
                return path
        return None

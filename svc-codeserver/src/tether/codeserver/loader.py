"""Import a code location's user code and find its ``Definitions``.

This is the user-code error boundary for loading: whatever the import raises (an
ImportError, a SyntaxError, any exception at module level) becomes an ErrorInfo in a
:class:`LoadedLocation`, never an exception out of the code server or run worker.

A location has one repository (a module-level ``Definitions``) or several (a
module-level list or tuple of ``Definitions`` with distinct names, e.g.
``repositories = [analytics, ops]``); ``attribute`` names either when the module has
more than one candidate.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tether.sdk import Definitions
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.errors import TetherError
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.snapshots import LocationSnapshot


class LocationLoadError(TetherError):
    """The location config itself cannot work (no module/file, no Definitions found...)."""


class RepositoryNotFound(LocationLoadError, KeyError):  # noqa: N818 - a lookup miss
    """A request names a repository (or a job) the location does not define."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AmbiguousRepository(LocationLoadError, ValueError):  # noqa: N818
    """A request names no repository, and several could serve it."""


@dataclass(frozen=True)
class LoadedLocation:
    """The outcome of loading a location: its repositories, or why they could not load.

    Attributes:
        definitions: the first repository (the only one in most locations).
        repositories: every repository, in declaration order.
    """

    config: LocationConfig
    definitions: Definitions | None = None
    error: ErrorInfo | None = None
    repositories: tuple[Definitions, ...] = ()

    def __post_init__(self) -> None:
        if self.definitions is not None and not self.repositories:
            object.__setattr__(self, "repositories", (self.definitions,))

    @property
    def loaded(self) -> bool:
        """Whether the definitions loaded."""
        return self.definitions is not None

    def repository(self, name: str | None = None, *, job_name: str | None = None) -> Definitions:
        """The repository named ``name``; unnamed, the only one, or the one defining ``job_name``.

        Raises:
            RepositoryNotFound: no such repository (or, unnamed, no repository has the job).
            AmbiguousRepository: unnamed, and several repositories could be meant.
            LocationLoadError: the location did not load.
        """
        if not self.repositories:
            raise LocationLoadError(f"location {self.config.name!r} did not load")
        known = ", ".join(d.name for d in self.repositories)
        if name:
            for defs in self.repositories:
                if defs.name == name:
                    return defs
            raise RepositoryNotFound(
                f"Repository {name!r} not found in code location {self.config.name!r} "
                f"(repositories: {known})"
            )
        if len(self.repositories) == 1:
            return self.repositories[0]
        if job_name is not None:
            having = [d for d in self.repositories if job_name in d.jobs]
            if len(having) == 1:
                return having[0]
            if not having:
                raise RepositoryNotFound(
                    f"job {job_name!r} not found in code location {self.config.name!r} "
                    f"(repositories: {known})"
                )
        raise AmbiguousRepository(
            f"code location {self.config.name!r} has several repositories ({known}); name one"
        )

    def snapshot(self) -> LocationSnapshot:
        """The location's snapshot, every repository included (only when loaded)."""
        if not self.repositories:
            raise LocationLoadError(f"location {self.config.name!r} did not load")
        return LocationSnapshot(
            location_name=self.config.name,
            repositories=[d.repository_snapshot() for d in self.repositories],
        )


def _add_to_path(directory: str | Path) -> None:
    path = str(Path(directory).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def _import(config: LocationConfig) -> ModuleType:
    if config.working_directory:
        _add_to_path(config.working_directory)
    if config.module and config.python_file:
        raise LocationLoadError(f"location {config.name!r}: set module or python_file, not both")
    if config.module:
        return importlib.import_module(config.module)
    if config.python_file:
        path = Path(config.python_file)
        if not path.is_absolute() and config.working_directory:
            path = Path(config.working_directory) / path
        if not path.is_file():
            raise LocationLoadError(
                f"location {config.name!r}: python_file {str(path)!r} not found"
            )
        if not config.working_directory:
            # Let the file import its siblings, as `python file.py` would.
            _add_to_path(path.parent)
        module_name = path.stem
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise LocationLoadError(f"location {config.name!r}: cannot load {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        # Registered before executing so dataclasses/pickle inside the file can find it.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    raise LocationLoadError(f"location {config.name!r}: neither module nor python_file is set")


def _as_repositories(value: Any) -> tuple[Definitions, ...] | None:
    """``value`` as repositories if it is a Definitions or a non-empty list/tuple of them."""
    if isinstance(value, Definitions):
        return (value,)
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(item, Definitions) for item in value)
    ):
        return tuple(value)
    return None


def _find_repositories(config: LocationConfig, module: ModuleType) -> tuple[Definitions, ...]:
    if config.attribute:
        try:
            value = getattr(module, config.attribute)
        except AttributeError:
            raise LocationLoadError(
                f"location {config.name!r}: {module.__name__} has no attribute {config.attribute!r}"
            ) from None
        found = _as_repositories(value)
        if found is None:
            raise LocationLoadError(
                f"location {config.name!r}: {module.__name__}.{config.attribute} is a "
                f"{type(value).__name__}, not a tether.sdk.Definitions (or a list of them)"
            )
        return _unique(config, found)
    lists = {
        k: v
        for k, v in vars(module).items()
        if not isinstance(v, Definitions) and _as_repositories(v) is not None
    }
    if len(lists) == 1:
        # A list of repositories is the location's explicit answer, even when its items
        # are also module-level names.
        return _unique(config, tuple(next(iter(lists.values()))))
    singles = {k: v for k, v in vars(module).items() if isinstance(v, Definitions)}
    if len(lists) > 1:
        raise LocationLoadError(
            f"location {config.name!r}: several lists of Definitions in {module.__name__} "
            f"({', '.join(sorted(lists))}); set 'attribute'"
        )
    if len(singles) == 1:
        return (next(iter(singles.values())),)
    if not singles:
        raise LocationLoadError(
            f"location {config.name!r}: no tether.sdk.Definitions found at module level of "
            f"{module.__name__}"
        )
    raise LocationLoadError(
        f"location {config.name!r}: several Definitions in {module.__name__} "
        f"({', '.join(sorted(singles))}); set 'attribute', or list them as repositories"
    )


def _unique(
    config: LocationConfig, repositories: tuple[Definitions, ...]
) -> tuple[Definitions, ...]:
    names = [d.name for d in repositories]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LocationLoadError(
            f"location {config.name!r}: several repositories named {', '.join(duplicates)}"
        )
    return repositories


def load_location(config: LocationConfig) -> LoadedLocation:
    """Import the location's code and find its Definitions; never raises for user errors.

    Args:
        config: where the code lives.

    Returns:
        The definitions, or the error (with traceback) that prevented loading them.
    """
    try:
        module = _import(config)
        repositories = _find_repositories(config, module)
        return LoadedLocation(config, definitions=repositories[0], repositories=repositories)
    except Exception as err:  # noqa: BLE001 - the user-code boundary: any failure is reported
        return LoadedLocation(config, error=ErrorInfo.from_exception(err))
    except SystemExit as err:
        # A module calling sys.exit() at import is a load error, not a reason to exit.
        return LoadedLocation(config, error=ErrorInfo.from_exception(err))

"""Import a code location's user code and find its ``Definitions``.

This is the user-code error boundary for loading: whatever the import raises (an
ImportError, a SyntaxError, any exception at module level) becomes an ErrorInfo in a
:class:`LoadedLocation`, never an exception out of the code server or run worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tether.sdk import Definitions
from tether.shared.errors import TetherError
from tether.shared.messages import ErrorInfo, LocationConfig, LocationSnapshot


class LocationLoadError(TetherError):
    """The location config itself cannot work (no module/file, no Definitions found...)."""


@dataclass(frozen=True)
class LoadedLocation:
    """The outcome of loading a location: its definitions, or why they could not load."""

    config: LocationConfig
    definitions: Definitions | None = None
    error: ErrorInfo | None = None

    @property
    def loaded(self) -> bool:
        """Whether the definitions loaded."""
        return self.definitions is not None

    def snapshot(self) -> LocationSnapshot:
        """The location's snapshot (only when loaded)."""
        if self.definitions is None:
            raise LocationLoadError(f"location {self.config.name!r} did not load")
        return self.definitions.location_snapshot(self.config.name)


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


def _find_definitions(config: LocationConfig, module: ModuleType) -> Definitions:
    if config.attribute:
        try:
            value = getattr(module, config.attribute)
        except AttributeError:
            raise LocationLoadError(
                f"location {config.name!r}: {module.__name__} has no attribute {config.attribute!r}"
            ) from None
        if not isinstance(value, Definitions):
            raise LocationLoadError(
                f"location {config.name!r}: {module.__name__}.{config.attribute} is a "
                f"{type(value).__name__}, not a tether.sdk.Definitions"
            )
        return value
    found = {k: v for k, v in vars(module).items() if isinstance(v, Definitions)}
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise LocationLoadError(
            f"location {config.name!r}: no tether.sdk.Definitions found at module level of "
            f"{module.__name__}"
        )
    raise LocationLoadError(
        f"location {config.name!r}: several Definitions in {module.__name__} "
        f"({', '.join(sorted(found))}); set 'attribute'"
    )


def load_location(config: LocationConfig) -> LoadedLocation:
    """Import the location's code and find its Definitions; never raises for user errors.

    Args:
        config: where the code lives.

    Returns:
        The definitions, or the error (with traceback) that prevented loading them.
    """
    try:
        module = _import(config)
        return LoadedLocation(config, definitions=_find_definitions(config, module))
    except Exception as err:  # noqa: BLE001 - the user-code boundary: any failure is reported
        return LoadedLocation(config, error=ErrorInfo.from_exception(err))
    except SystemExit as err:
        # A module calling sys.exit() at import is a load error, not a reason to exit.
        return LoadedLocation(config, error=ErrorInfo.from_exception(err))

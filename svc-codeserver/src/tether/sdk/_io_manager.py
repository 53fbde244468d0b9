"""IO managers: where asset values are stored and how a later run reads them.

An IO manager is a resource (key ``io_manager`` unless an asset names another with
``io_manager_key``) with two methods: :meth:`IOManager.handle_output` stores the value an
asset's function returned, :meth:`IOManager.load_input` reads an upstream asset's value
for an asset whose run does not compute it. Both run in the run worker, in the
customer's environment: the control plane never holds a value.

With no ``io_manager`` resource, :class:`FilesystemIOManager` keeps values under the run
worker's storage directory (``<STORAGE_DIR>/assets``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from tether.sdk._resources import ConfigurableResource

if TYPE_CHECKING:
    from tether.sdk._asset_key import AssetKey

#: The resource key of the IO manager assets use unless they name another.
DEFAULT_IO_MANAGER_KEY = "io_manager"


@dataclass
class OutputContext:
    """What :meth:`IOManager.handle_output` knows of the value to store.

    Attributes:
        asset_key: the asset.
        partition_key: the partition being materialized, for a partitioned asset.
        run_id: the run materializing it.
        step_key: its step.
        metadata: the asset's definition metadata.
        code_version: the asset's code version.
    """

    asset_key: AssetKey
    partition_key: str | None = None
    run_id: str = ""
    step_key: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    code_version: str | None = None
    _output_metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def has_partition_key(self) -> bool:
        """Whether one partition is being stored."""
        return self.partition_key is not None

    def add_output_metadata(self, metadata: dict[str, Any]) -> None:
        """Attach facts about the stored value (a path, a size) to the materialization."""
        self._output_metadata.update(metadata)


@dataclass
class InputContext:
    """What :meth:`IOManager.load_input` knows of the value to read.

    Attributes:
        asset_key: the upstream asset whose value is read.
        partition_key: the upstream partition to read; None for an unpartitioned asset,
            or when every partition is read (see ``asset_partition_keys``).
        asset_partition_keys: with no ``partition_key`` for a partitioned upstream, read
            every partition (None: the IO manager finds the stored ones).
        upstream_partitioned: whether the upstream asset is partitioned.
        run_id: the run reading it.
        step_key: the step reading it.
        input_name: the parameter receiving it.
    """

    asset_key: AssetKey
    partition_key: str | None = None
    asset_partition_keys: list[str] | None = None
    upstream_partitioned: bool = False
    run_id: str = ""
    step_key: str = ""
    input_name: str = ""
    _loaded: list[LoadedValue] = field(default_factory=list, repr=False)

    def record_loaded(self, run_id: str | None, partition_key: str | None = None) -> None:
        """Say which run materialized a value just read (of one partition, if set).

        The run worker lists what a step read on the materializations it stores (their
        ``upstream``): the built-in IO managers call this for each value they read, from
        what they recorded when storing it. A custom IO manager may call it too; if it
        does not, the upstream is listed with no run.
        """
        self._loaded.append(LoadedValue(run_id or None, partition_key))

    @property
    def loaded(self) -> list[LoadedValue]:
        """What :meth:`record_loaded` recorded, in order."""
        return list(self._loaded)


@dataclass(frozen=True)
class LoadedValue:
    """One value an IO manager read: the run that stored it, and its partition.

    Attributes:
        run_id: the run that materialized it (None: not known).
        partition_key: its partition (None: unpartitioned).
    """

    run_id: str | None
    partition_key: str | None = None


class IOManager(ABC):
    """Stores asset values and reads them back; subclass it (or :class:`ConfigurableIOManager`)."""

    @abstractmethod
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """Store ``obj``, the value of ``context.asset_key`` (one partition, if set)."""

    @abstractmethod
    def load_input(self, context: InputContext) -> Any:
        """Read the value of ``context.asset_key`` (a dict of partition -> value when a
        partitioned upstream is read whole)."""


class ConfigurableIOManager(ConfigurableResource, IOManager):
    """An IO manager configured like any resource (pydantic fields, EnvVar allowed)."""


def partition_file_name(partition_key: str) -> str:
    """A partition key as one safe file name: percent-quoted, so no separator, and never
    hidden, ``.`` or ``..`` (a leading dot is quoted too)."""
    if not partition_key:
        raise ValueError("an empty partition key has no file")
    name = quote(partition_key, safe="-_:")
    return "%2E" + name[1:] if name.startswith(".") else name


class FilesystemIOManager(ConfigurableIOManager):
    """Pickles each value under ``base_dir``: ``<key path>/__value`` for an unpartitioned
    asset, ``<key path>/<partition>`` for each partition of a partitioned one.

    Attributes:
        base_dir: where values go; None: the run worker's ``<STORAGE_DIR>/assets``.
    """

    base_dir: str | None = None

    def _root(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("FilesystemIOManager has no base_dir (the run worker sets it)")
        return Path(self.base_dir)

    def path_for(self, key: AssetKey, partition_key: str | None) -> Path:
        """The file holding ``key``'s value (of one partition)."""
        directory = self._root().joinpath(*key.path)
        leaf = "__value" if partition_key is None else partition_file_name(partition_key)
        return directory / leaf

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self.path_for(context.asset_key, context.partition_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
                # Who stored it, after the value in the same file: a reader sees the value
                # and its provenance together (and a plain pickle.load still reads the value).
                pickle.dump(_provenance(context), f, protocol=pickle.HIGHEST_PROTOCOL)
            # Readers see the old value or the new one, never half a pickle.
            tmp.replace(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        context.add_output_metadata({"path": str(path)})

    def load_input(self, context: InputContext) -> Any:
        key = context.asset_key
        if context.upstream_partitioned and context.partition_key is None:
            keys = context.asset_partition_keys
            directory = self._root().joinpath(*key.path)
            if keys is None:
                found = sorted(p for p in directory.glob("*") if not p.name.startswith("."))
                keys = [unquote(p.name) for p in found if p.name != "__value"]
            return {k: _load(self.path_for(key, k), key, context, k) for k in keys}
        return _load(self.path_for(key, context.partition_key), key, context, context.partition_key)


#: Marks the provenance record stored after a value.
_PROVENANCE = "tether.v1.stored_by"


def _provenance(context: OutputContext) -> dict[str, Any]:
    return {
        "type": _PROVENANCE,
        "run_id": context.run_id,
        "step_key": context.step_key,
        "partition": context.partition_key,
    }


def _load(
    path: Path, key: AssetKey, context: InputContext, partition_key: str | None = None
) -> Any:
    try:
        with path.open("rb") as f:
            value = pickle.load(f)  # noqa: S301 - the customer's own values, in their storage
            try:
                stored_by = pickle.load(f)  # noqa: S301 - written with the value above
            except EOFError:  # a value stored before provenance was recorded
                stored_by = None
    except FileNotFoundError:
        what = key.to_user_string() + (f" (partition {partition_key})" if partition_key else "")
        raise FileNotFoundError(
            f"no stored value of asset {what} at {path}: materialize it first"
        ) from None
    run_id = None
    if isinstance(stored_by, dict) and stored_by.get("type") == _PROVENANCE:
        run_id = stored_by.get("run_id") if isinstance(stored_by.get("run_id"), str) else None
    context.record_loaded(run_id, partition_key)
    return value

"""The resources and IO managers of one run's asset steps, in the process that runs them.

Both executors use it the same way around an asset's op call: :meth:`AssetIO.inputs`
gives the values the op reads that its run does not compute (loaded through the
upstream's IO manager) and the resources its parameters name; :meth:`AssetIO.store`
hands the op's value to the asset's IO manager. Both run inside the step's user-code
boundary: a missing environment variable, an IO manager that raises or a value never
materialized fails that step, with its reason, and nothing else.

Resources are made on first use, once per process: an ``EnvVar`` is read from the run
worker's environment then, and a ``FilesystemIOManager`` without ``base_dir`` keeps
values under the worker's storage directory (``<STORAGE_DIR>/assets``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tether.sdk import (
    PARTITION_KEY_TAG,
    AssetKey,
    AssetsDefinition,
    ConfigurableResource,
    FilesystemIOManager,
    InputContext,
    IOManager,
    JobDefinition,
    Node,
    OpContext,
    OutputContext,
    ResourceError,
    Resources,
)
from tether.sdk._io_manager import DEFAULT_IO_MANAGER_KEY

__all__ = ["ASSETS_DIR", "AssetIO"]

#: Where the default IO manager keeps values, under the run worker's storage directory.
ASSETS_DIR = "assets"


class AssetIO:
    """IO managers and resources of one run.

    Args:
        job: the run's job (an asset job carries its assets, graph and resources).
        run_id: the run.
        run_tags: its tags (the partition key is ``tether/partition``).
        storage_dir: the run worker's storage directory.
        environ: where EnvVar fields are read (default: this process's environment).
    """

    def __init__(
        self,
        job: JobDefinition,
        run_id: str,
        run_tags: Mapping[str, str],
        storage_dir: str | Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._job = job
        self._run_id = run_id
        self._partition_key = run_tags.get(PARTITION_KEY_TAG)
        self._assets_dir = Path(storage_dir).absolute() / ASSETS_DIR
        self._environ = os.environ if environ is None else environ
        self._made: dict[str, Any] = {}

    def asset_of(self, node: Node) -> AssetsDefinition | None:
        """The asset ``node`` materializes, if it is an asset step."""
        return self._job.assets.get(node.name)

    def resource(self, key: str) -> Any:
        """Resource ``key``, made (EnvVars read, defaults filled) on first use.

        Raises:
            ResourceError: no such resource, or it cannot be made.
        """
        if key not in self._made:
            try:
                value = self._job.resources[key]
            except KeyError:
                raise ResourceError(f"no resource {key!r} in the repository") from None
            if isinstance(value, FilesystemIOManager) and value.base_dir is None:
                value = value.model_copy(update={"base_dir": str(self._assets_dir)})
            if isinstance(value, ConfigurableResource):
                value = value.resolved(self._environ)
            self._made[key] = value
        return self._made[key]

    def context_fields(self, node: Node) -> dict[str, Any]:
        """The OpContext fields of an asset step: its key and its resources."""
        asset = self.asset_of(node)
        if asset is None:
            return {}
        return {
            "asset_key": asset.key,
            "resources": _LazyResources(self, sorted(asset.required_resource_keys)),
        }

    def inputs(self, node: Node) -> dict[str, Any]:
        """The keyword arguments of an asset step that the run's own steps do not give:
        values loaded through IO managers, and resources."""
        asset = self.asset_of(node)
        if asset is None:
            return {}
        kwargs: dict[str, Any] = {}
        for param, upstream in asset.input_keys.items():
            if param not in node.inputs:
                kwargs[param] = self._load(asset, node, param, upstream)
        for param in asset.resource_params:
            kwargs[param] = self.resource(param)
        return kwargs

    def _load(self, asset: AssetsDefinition, node: Node, param: str, upstream: AssetKey) -> Any:
        graph = self._job.asset_graph
        spec = graph.specs.get(upstream) if graph is not None else None
        computed = graph.computed.get(upstream) if graph is not None else None
        # Another location's or an external asset: read with this asset's IO manager.
        manager_key = computed.io_manager_key if computed is not None else asset.io_manager_key
        partitions = spec.partitions_def if spec is not None else None
        same = partitions is not None and partitions == asset.partitions_def
        context = InputContext(
            asset_key=upstream,
            partition_key=self._partition_key if same else None,
            upstream_partitioned=partitions is not None,
            run_id=self._run_id,
            step_key=node.name,
            input_name=param,
        )
        return self._manager(manager_key).load_input(context)

    def store(self, node: Node, value: Any, context: OpContext) -> None:
        """Hand an asset step's value to its IO manager; what the manager reports of the
        stored value joins the step's output metadata."""
        asset = self.asset_of(node)
        if asset is None:
            return
        partition = None
        if asset.partitions_def is not None:
            if self._partition_key is None:
                raise ResourceError(
                    f"asset {asset.key.to_user_string()!r} is partitioned: its run needs a "
                    "partition key"
                )
            partition = self._partition_key
        out = OutputContext(
            asset_key=asset.key,
            partition_key=partition,
            run_id=self._run_id,
            step_key=node.name,
            metadata=dict(asset.spec.metadata),
            code_version=asset.spec.code_version,
        )
        self._manager(asset.io_manager_key).handle_output(out, value)
        if out._output_metadata:
            context.add_output_metadata(out._output_metadata)

    def _manager(self, key: str) -> IOManager:
        manager = self.resource(key or DEFAULT_IO_MANAGER_KEY)
        if not isinstance(manager, IOManager):
            raise ResourceError(f"resource {key!r} is not an IOManager")
        return manager


class _LazyResources(Resources):
    """``context.resources``: each resource made when the op first touches it."""

    def __init__(self, io: AssetIO, keys: list[str]) -> None:
        super().__init__(dict.fromkeys(keys))
        self.__dict__["_io"] = io

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__["_values"]
        if name not in values:
            return super().__getattr__(name)
        return self.__dict__["_io"].resource(name)

"""The resources and IO managers of one run's asset steps, in the process that runs them.

Both executors use it the same way around an asset's op call: :meth:`AssetIO.inputs`
gives the values the op reads that its run does not compute (loaded through the
upstream's IO manager) and the resources its parameters name; :meth:`AssetIO.store`
hands the op's value (each of a multi-asset's) to the asset's IO manager and emits the
asset's ``ASSET_MATERIALIZATION`` once it is stored. Both run inside the step's user-code
boundary: a missing environment variable, an IO manager that raises or a value never
materialized fails that step, with its reason, and nothing else.

Lineage: every upstream value a step reads is listed on the materializations it stores
(``upstream``: key, partition, and the run that materialized it). A value loaded through
an IO manager names the run the IO manager recorded when storing it (the built-in ones
keep it beside the value); one computed earlier in the same run names this run. In a
re-execution, an asset step whose upstream asset step is not selected loads the upstream
through its IO manager (as a later run would), not from the parent run's step outputs:
the value is where the IO manager put it, say S3, even when the parent ran on another
container.

Ops that are not assets get their resources here too (``context.resources`` and
parameters typed with a ConfigurableResource).

Resources are made on first use, once per process: an ``EnvVar`` is read from the run
worker's environment then, and a ``FilesystemIOManager`` without ``base_dir`` keeps
values under the worker's storage directory (``<STORAGE_DIR>/assets``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tether.sdk import (
    PARTITION_KEY_TAG,
    AssetKey,
    AssetsDefinition,
    ConfigurableResource,
    FilesystemIOManager,
    InputContext,
    IOManager,
    JobDefinition,
    MaterializeResult,
    Node,
    OpContext,
    OutputContext,
    OutputHandle,
    ResourceError,
    Resources,
)
from tether.sdk._context import ASSET_MATERIALIZATION
from tether.sdk._io_manager import DEFAULT_IO_MANAGER_KEY
from tether.shared.wire.assets import (
    MAX_UPSTREAM,
    AssetMaterializationData,
    UpstreamMaterialization,
)

__all__ = ["ASSETS_DIR", "AssetIO", "loaded_through_io_manager"]

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
        step_selection: the steps the run executes (None: all); an asset step reads an
            unselected upstream asset step's value through the IO manager.
    """

    def __init__(
        self,
        job: JobDefinition,
        run_id: str,
        run_tags: Mapping[str, str],
        storage_dir: str | Path,
        environ: Mapping[str, str] | None = None,
        step_selection: Collection[str] | None = None,
    ) -> None:
        self._job = job
        self._run_id = run_id
        self._partition_key = run_tags.get(PARTITION_KEY_TAG)
        self._assets_dir = Path(storage_dir).absolute() / ASSETS_DIR
        self._environ = os.environ if environ is None else environ
        self._selected = None if step_selection is None else frozenset(step_selection)
        self._made: dict[str, Any] = {}
        # Step -> what it read, listed on the materializations it stores.
        self._read: dict[str, list[UpstreamMaterialization | None]] = {}

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
        """The OpContext fields of an asset step: its keys and its resources."""
        asset = self.asset_of(node)
        if asset is None:
            keys = node.op.resource_keys
            return {"resources": _LazyResources(self, sorted(keys))} if keys else {}
        return {
            "asset_key": None if asset.multi else asset.key,
            "selected_asset_keys": frozenset(asset.keys),
            "selected_output_names": frozenset(asset.output_names[k] for k in asset.keys),
            "resources": _LazyResources(self, sorted(asset.required_resource_keys)),
        }

    def io_loaded(self, node: Node) -> frozenset[str]:
        """The parameters of ``node`` read through an IO manager, not from this run's steps."""
        return loaded_through_io_manager(self._job, node, self._selected)

    def inputs(self, node: Node) -> dict[str, Any]:
        """The keyword arguments of a step that the run's own steps do not give: an asset
        step's values loaded through IO managers, and resources."""
        asset = self.asset_of(node)
        if asset is None:
            return {param: self.resource(param) for param in node.op.resource_params}
        kwargs: dict[str, Any] = {}
        read: list[UpstreamMaterialization | None] = []
        loaded = self.io_loaded(node)
        for param, upstream in asset.input_keys.items():
            if param in loaded:
                kwargs[param], context = self._load(asset, node, param, upstream)
                read.extend(_upstream(upstream, context))
            elif param in node.inputs:
                # Computed earlier in this run (of the run's partition, if partitioned).
                same, _ = self._partitioning(asset, upstream)
                partition = self._partition_key if same else None
                read.append(_entry(upstream, partition, self._run_id))
        for param in asset.resource_params:
            kwargs[param] = self.resource(param)
        self._read[node.name] = read
        return kwargs

    def _partitioning(self, asset: AssetsDefinition, upstream: AssetKey) -> tuple[bool, bool]:
        """Whether ``upstream`` is partitioned like ``asset``, and whether it is partitioned."""
        graph = self._job.asset_graph
        spec = graph.specs.get(upstream) if graph is not None else None
        partitions = spec.partitions_def if spec is not None else None
        return partitions is not None and partitions == asset.partitions_def, partitions is not None

    def _load(
        self, asset: AssetsDefinition, node: Node, param: str, upstream: AssetKey
    ) -> tuple[Any, InputContext]:
        graph = self._job.asset_graph
        computed = graph.computed.get(upstream) if graph is not None else None
        # Another location's or an external asset: read with the IO manager of the reader.
        manager_key = (
            computed.io_manager_key_for(upstream)
            if computed is not None
            else asset.io_manager_key_for(asset.keys[0])
        )
        same, partitioned = self._partitioning(asset, upstream)
        context = InputContext(
            asset_key=upstream,
            partition_key=self._partition_key if same else None,
            upstream_partitioned=partitioned,
            run_id=self._run_id,
            step_key=node.name,
            input_name=param,
        )
        return self._manager(manager_key).load_input(context), context

    def store(self, node: Node, value: Any, context: OpContext) -> Any:
        """Hand an asset step's value (each of a multi-asset's) to its IO manager and emit
        one ``ASSET_MATERIALIZATION`` per asset stored; return the step's output (a
        multi-asset's: out name -> value).

        Raises:
            ResourceError: a partitioned asset in a run without a partition, or a
                multi-asset that returned something other than its outs.
        """
        asset = self.asset_of(node)
        if asset is None:
            return value
        partition = None
        if asset.partitions_def is not None:
            if self._partition_key is None:
                raise ResourceError(
                    f"asset {_names(asset)!r} is partitioned: its run needs a partition key"
                )
            partition = self._partition_key
        values = _per_key(asset, value)
        read = self._read.pop(node.name, [])
        listed = [u for u in read if u is not None][:MAX_UPSTREAM]
        for key, part in values.items():
            spec = asset.spec_for(key)
            out = OutputContext(
                asset_key=key,
                partition_key=partition,
                run_id=self._run_id,
                step_key=node.name,
                metadata=dict(spec.metadata),
                code_version=spec.code_version,
            )
            reported: dict[str, Any] = {}
            if isinstance(part, MaterializeResult):  # the asset stored its data itself
                reported = part.metadata
            else:
                self._manager(asset.io_manager_key_for(key)).handle_output(out, part)
            data = AssetMaterializationData(
                asset_key=list(key.path),
                description=spec.description,
                metadata={**context.output_metadata, **out._output_metadata, **reported},
                partition=partition,
                code_version=spec.code_version,
                upstream=listed,
                upstream_truncated=len(listed) < len(read),
            )
            context.event_sink(ASSET_MATERIALIZATION, node.name, data.model_dump(mode="json"))
        if not asset.multi:
            return value
        return {asset.output_names[k]: v for k, v in values.items()}

    def _manager(self, key: str) -> IOManager:
        manager = self.resource(key or DEFAULT_IO_MANAGER_KEY)
        if not isinstance(manager, IOManager):
            raise ResourceError(f"resource {key!r} is not an IOManager")
        return manager


def loaded_through_io_manager(
    job: JobDefinition, node: Node, selected: Collection[str] | None
) -> frozenset[str]:
    """The parameters of ``node`` whose values an IO manager loads: for an asset step,
    those its job does not compute, and those from an upstream asset step the run does not
    execute (``selected``: the steps it does; None: all)."""
    asset = job.assets.get(node.name)
    if asset is None:
        return frozenset()
    out = set()
    for param in asset.input_keys:
        source = node.inputs.get(param)
        if source is None:
            out.add(param)
        elif (
            selected is not None
            and isinstance(source, OutputHandle)
            and source.node not in selected
            and source.node in job.assets
        ):
            out.add(param)
    return frozenset(out)


def _entry(
    key: AssetKey, partition: str | None, run_id: str | None
) -> UpstreamMaterialization | None:
    """One lineage entry; None if the key or partition exceeds the wire bounds (the
    materialization then says its upstream list is truncated)."""
    try:
        return UpstreamMaterialization(asset_key=list(key.path), partition=partition, run_id=run_id)
    except ValidationError:
        return None


def _upstream(key: AssetKey, context: InputContext) -> list[UpstreamMaterialization | None]:
    """What one load read, as the IO manager recorded it (one entry with no run if the IO
    manager recorded nothing; a run id that is not one is dropped)."""
    loaded = context.loaded
    if not loaded:
        return [_entry(key, context.partition_key, None)]
    out = []
    for value in loaded:
        run_id = value.run_id
        if run_id is not None and not _RUN_ID.match(run_id):
            run_id = None
        partition = value.partition_key if value.partition_key else None
        out.append(_entry(key, partition, run_id))
    return out


#: What a run id may look like on the wire (see UpstreamMaterialization.run_id).
_RUN_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _names(asset: AssetsDefinition) -> str:
    return ", ".join(k.to_user_string() for k in asset.keys)


def _per_key(asset: AssetsDefinition, value: Any) -> dict[AssetKey, Any]:
    """The value of each key the step computes, from what the function returned."""
    if not asset.multi:
        return {asset.key: value}
    outs = {asset.output_names[k]: k for k in asset.keys}
    if isinstance(value, MaterializeResult):
        value = (value,)
    if (
        isinstance(value, tuple | list)
        and value
        and all(isinstance(v, MaterializeResult) for v in value)
    ):
        return _results_by_key(asset, value)
    if isinstance(value, dict):
        if set(value) != set(outs):
            raise ResourceError(
                f"multi-asset {asset.op.name!r} returned outs {sorted(value)}, expected "
                f"{sorted(outs)}"
            )
        return {outs[name]: v for name, v in value.items()}
    if isinstance(value, tuple | list) and len(value) == len(outs):
        return dict(zip(outs.values(), value, strict=True))
    raise ResourceError(
        f"multi-asset {asset.op.name!r} must return a tuple of {len(outs)} values (one per "
        f"out, in order) or a dict of out name -> value, got {type(value).__name__}"
    )


def _results_by_key(
    asset: AssetsDefinition, results: Sequence[MaterializeResult]
) -> dict[AssetKey, Any]:
    """A multi-asset's MaterializeResults by the asset each names (one per computed key)."""
    found: dict[AssetKey, Any] = {}
    for result in results:
        if result.asset_key is None:
            raise ResourceError(
                f"multi-asset {asset.op.name!r} returned a MaterializeResult without an "
                "asset_key: name the asset each result is of"
            )
        if result.asset_key not in asset.keys or result.asset_key in found:
            raise ResourceError(
                f"multi-asset {asset.op.name!r} returned a MaterializeResult of "
                f"{result.asset_key.to_user_string()!r}, which it does not compute (or twice)"
            )
        found[result.asset_key] = result
    if set(found) != set(asset.keys):
        missing = sorted(k.to_user_string() for k in set(asset.keys) - set(found))
        raise ResourceError(
            f"multi-asset {asset.op.name!r} returned no MaterializeResult of {missing}"
        )
    return found


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

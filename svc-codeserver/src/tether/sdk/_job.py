"""The ``@job`` decorator: a function body composes ops into a graph, Dagster-style.

The body runs once, at decoration time, with a composition recorder active. Each op
call inside it records a node and returns an :class:`OutputHandle`; passing handles to
other ops records edges. A list of handles passed to one input is a fan-in (the op
receives a list of values, in that order).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from tether.sdk._errors import DefinitionError
from tether.sdk._op import RESULT, OpDefinition, check_name
from tether.sdk._partitioned_config import PartitionedConfig, PartitionRun
from tether.sdk._partitions import PARTITION_KEY_TAG, PARTITION_SET_TAG, PartitionsDefinition
from tether.sdk._retry import RetryPolicy

if TYPE_CHECKING:
    from datetime import datetime

    from tether.sdk._asset_graph import AssetGraph
    from tether.sdk._assets import AssetsDefinition


@dataclass(frozen=True)
class OutputHandle:
    """The (future) output of one node, usable as another node's input inside a job body."""

    node: str
    output: str = RESULT


#: The executors a job may choose (``@job(executor=...)``); the first is the default.
EXECUTORS = ("in_process", "multiprocess")

#: What feeds one input: one upstream output, or several (fan-in, delivered as a list).
InputSource = OutputHandle | tuple[OutputHandle, ...]


@dataclass(frozen=True)
class Node:
    """One use of an op in a job, under a unique node name.

    Attributes:
        inputs: where each input's value comes from.
        after: nodes that must succeed before this one although it reads none of their
            values (an asset's ``deps=``).
    """

    name: str
    op: OpDefinition
    inputs: Mapping[str, InputSource] = field(default_factory=dict)
    after: tuple[str, ...] = ()

    def value_upstream(self) -> list[str]:
        """Names of the nodes whose outputs this node reads, without duplicates, in order."""
        seen: dict[str, None] = {}
        for source in self.inputs.values():
            for handle in source if isinstance(source, tuple) else (source,):
                seen.setdefault(handle.node, None)
        return list(seen)

    def upstream(self) -> list[str]:
        """Names of the nodes this node waits for: those it reads, then its ``after``."""
        return list(dict.fromkeys([*self.value_upstream(), *self.after]))


@dataclass(frozen=True)
class EdgeDef:
    """``from_node.from_output`` feeds ``to_node.to_input``."""

    from_node: str
    from_output: str
    to_node: str
    to_input: str


@dataclass(frozen=True)
class JobDefinition:
    """A named graph of nodes; ``nodes`` is in a valid execution (topological) order.

    Attributes:
        partitions_def: the job's partitions, if it is partitioned.
        partitioned_config: run config and tags per partition key, if given.
        op_retry_policy: retry policy of every op that has none of its own.
        executor: ``"in_process"`` (default) or ``"multiprocess"``; a run may override
            it with ``{"execution": {"multiprocess": {"max_concurrent": N}}}`` or
            ``{"execution": {"in_process": {}}}`` in its run config.
        assets: node name -> the asset it materializes (asset jobs only).
        asset_graph: the repository's asset graph (asset jobs only).
        resources: the repository's resources by key (asset jobs only).
    """

    name: str
    nodes: tuple[Node, ...]
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    partitions_def: PartitionsDefinition | None = None
    partitioned_config: PartitionedConfig | None = None
    op_retry_policy: RetryPolicy | None = None
    executor: str = EXECUTORS[0]
    assets: Mapping[str, AssetsDefinition] = field(default_factory=dict)
    asset_graph: AssetGraph | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)

    @property
    def partition_set_name(self) -> str | None:
        """Name of the job's partition set (``<job>_partition_set``), if partitioned."""
        return f"{self.name}_partition_set" if self.partitions_def is not None else None

    def retry_policy_for(self, node_name: str) -> RetryPolicy | None:
        """The retry policy of node ``node_name``: its op's own, else the job's default."""
        return self.node(node_name).op.retry_policy or self.op_retry_policy

    def partition_run(
        self, partition_key: str, current_time: datetime | None = None
    ) -> PartitionRun:
        """Run config and tags of a run of partition ``partition_key``.

        Calls user code (the partitioned config functions): may raise anything.

        Raises:
            DefinitionError: the job is not partitioned.
            PartitionKeyError: no such partition at ``current_time`` (default now).
        """
        if self.partitions_def is None:
            raise DefinitionError(f"job {self.name!r} is not partitioned")
        key = self.partitions_def.check_key(partition_key, current_time)
        run_config: dict[str, Any] = {}
        user_tags: dict[str, str] = {}
        if self.partitioned_config is not None:
            run_config = self.partitioned_config.run_config_for_partition(key)
            user_tags = self.partitioned_config.tags_for_partition(key)
        tags = {
            **user_tags,
            **self.partitions_def.tags_for_key(key),
            PARTITION_KEY_TAG: key,
            PARTITION_SET_TAG: self.partition_set_name or "",
        }
        return PartitionRun(partition_key=key, run_config=run_config, tags=tags)

    def node(self, name: str) -> Node:
        """Return the node named ``name`` (KeyError if absent)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def edges(self) -> list[EdgeDef]:
        """Every data dependency of the graph, fan-in edges in list order."""
        out: list[EdgeDef] = []
        for node in self.nodes:
            for input_name, source in node.inputs.items():
                for handle in source if isinstance(source, tuple) else (source,):
                    out.append(EdgeDef(handle.node, handle.output, node.name, input_name))
        return out

    def config_schema(self) -> dict[str, Any]:
        """JSON Schema of this job's run config (see :func:`tether.sdk.job_config_schema`)."""
        from tether.sdk._schema import job_config_schema

        return job_config_schema(self)


class _Composition:
    """Records the nodes created while a job body runs."""

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self.nodes: dict[str, Node] = {}
        self._uses: dict[str, int] = {}

    def _node_name(self, op: OpDefinition, alias: str | None) -> str:
        if alias is not None:
            if alias in self.nodes:
                raise DefinitionError(f"job {self.job_name!r}: node name {alias!r} used twice")
            return alias
        # First use keeps the op name; later uses get op_2, op_3... skipping taken names.
        count = self._uses.get(op.name, 0)
        name = op.name
        while name in self.nodes:
            count += 1
            name = f"{op.name}_{count}"
        self._uses[op.name] = max(count, 1)
        return name

    def add_node(
        self, op: OpDefinition, alias: str | None, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> OutputHandle:
        name = self._node_name(op, alias)
        where = f"job {self.job_name!r}, node {name!r}"
        if len(args) > len(op.inputs):
            raise DefinitionError(
                f"{where}: {len(args)} positional inputs given, op {op.name!r} takes "
                f"{len(op.inputs)}"
            )
        bound: dict[str, Any] = {}
        for input_def, value in zip(op.inputs, args, strict=False):
            bound[input_def.name] = value
        known = {i.name for i in op.inputs}
        for key, value in kwargs.items():
            if key not in known:
                raise DefinitionError(f"{where}: op {op.name!r} has no input {key!r}")
            if key in bound:
                raise DefinitionError(f"{where}: input {key!r} given twice")
            bound[key] = value
        inputs: dict[str, InputSource] = {}
        for input_def in op.inputs:
            if input_def.name not in bound:
                if input_def.has_default:
                    continue
                raise DefinitionError(f"{where}: input {input_def.name!r} is not connected")
            inputs[input_def.name] = self._source(where, input_def.name, bound[input_def.name])
        self.nodes[name] = Node(name=name, op=op, inputs=inputs)
        return OutputHandle(name)

    def _source(self, where: str, input_name: str, value: Any) -> InputSource:
        if isinstance(value, OutputHandle):
            return value
        if (
            isinstance(value, list | tuple)
            and value
            and all(isinstance(v, OutputHandle) for v in value)
        ):
            return tuple(value)
        raise DefinitionError(
            f"{where}: input {input_name!r} must be the output of another op (or a list of "
            f"them) inside a job body, got {type(value).__name__}"
        )


_composition: ContextVar[_Composition | None] = ContextVar("tether_composition", default=None)


def current_composition() -> _Composition | None:
    """The job body being composed on this thread, if any."""
    return _composition.get()


@dataclass(frozen=True)
class _JobOptions:
    name: str | None = None
    description: str | None = None
    tags: Mapping[str, str] | None = None
    partitions_def: PartitionsDefinition | None = None
    config: PartitionedConfig | None = None
    op_retry_policy: RetryPolicy | None = None
    executor: str = EXECUTORS[0]


def _partitioning(
    job_name: str, options: _JobOptions
) -> tuple[PartitionsDefinition | None, PartitionedConfig | None]:
    partitions_def, config = options.partitions_def, options.config
    if partitions_def is not None and not isinstance(partitions_def, PartitionsDefinition):
        raise DefinitionError(f"job {job_name!r}: partitions_def must be a PartitionsDefinition")
    if config is None:
        return partitions_def, None
    if not isinstance(config, PartitionedConfig):
        raise DefinitionError(
            f"job {job_name!r}: config must be a PartitionedConfig (see @partitioned_config)"
        )
    if partitions_def is not None and partitions_def != config.partitions_def:
        raise DefinitionError(
            f"job {job_name!r}: partitions_def differs from the partitioned config's partitions"
        )
    return config.partitions_def, config


def _build_job(fn: Callable[[], Any], options: _JobOptions) -> JobDefinition:
    if not callable(fn):
        raise DefinitionError(f"@job needs a function, got {fn!r}")
    job_name = check_name(options.name or fn.__name__, "job")
    partitions_def, partitioned_config = _partitioning(job_name, options)
    if options.op_retry_policy is not None and not isinstance(options.op_retry_policy, RetryPolicy):
        raise DefinitionError(f"job {job_name!r}: op_retry_policy must be a RetryPolicy")
    if options.executor not in EXECUTORS:
        raise DefinitionError(
            f"job {job_name!r}: executor must be one of {', '.join(EXECUTORS)}, "
            f"got {options.executor!r}"
        )
    if inspect.signature(fn).parameters:
        raise DefinitionError(f"job {job_name!r}: a job body takes no parameters")
    composition = _Composition(job_name)
    token = _composition.set(composition)
    try:
        fn()
    finally:
        _composition.reset(token)
    if not composition.nodes:
        raise DefinitionError(f"job {job_name!r} calls no ops")
    return JobDefinition(
        name=job_name,
        # Insertion order is topological: a handle exists only after its node was added.
        nodes=tuple(composition.nodes.values()),
        description=(
            options.description if options.description is not None else inspect.getdoc(fn) or ""
        ),
        tags={str(k): str(v) for k, v in (options.tags or {}).items()},
        partitions_def=partitions_def,
        partitioned_config=partitioned_config,
        op_retry_policy=options.op_retry_policy,
        executor=options.executor,
    )


@overload
def job(fn: Callable[[], Any], /) -> JobDefinition: ...


@overload
def job(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    config: PartitionedConfig | None = None,
    op_retry_policy: RetryPolicy | None = None,
    executor: str = EXECUTORS[0],
) -> Callable[[Callable[[], Any]], JobDefinition]: ...


def job(
    fn: Callable[[], Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    config: PartitionedConfig | None = None,
    op_retry_policy: RetryPolicy | None = None,
    executor: str = EXECUTORS[0],
) -> JobDefinition | Callable[[Callable[[], Any]], JobDefinition]:
    """Declare a job, bare (``@job``) or with options (``@job(name=...)``).

    The body calls ops and wires outputs to inputs; it runs once, now, to build the graph.

    Args:
        fn: the job body (when used bare).
        name: job name; defaults to the function name.
        description: defaults to the function's docstring.
        tags: string key/value tags.
        partitions_def: partitions of the job (runs of a partition get its key as tags).
        config: a :class:`~tether.sdk.PartitionedConfig` giving each partition's run config
            and tags (its partitions become the job's).
        op_retry_policy: retry policy of every op without its own.
        executor: how runs execute the ops: ``"in_process"`` (default; one by one in the
            run worker) or ``"multiprocess"`` (each step in its own process, up to
            ``max_concurrent`` at once, outputs passed as pickles through a per-run
            directory). A run overrides it with the ``execution`` section of its run
            config: ``{"execution": {"multiprocess": {"max_concurrent": 2}}}``.
    """
    options = _JobOptions(
        name, description, tags, partitions_def, config, op_retry_policy, executor
    )
    if fn is not None:
        return _build_job(fn, options)

    def decorate(f: Callable[[], Any]) -> JobDefinition:
        return _build_job(f, options)

    return decorate

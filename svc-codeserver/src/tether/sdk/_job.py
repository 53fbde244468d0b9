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
from typing import Any, overload

from tether.sdk._errors import DefinitionError
from tether.sdk._op import RESULT, OpDefinition, check_name


@dataclass(frozen=True)
class OutputHandle:
    """The (future) output of one node, usable as another node's input inside a job body."""

    node: str
    output: str = RESULT


#: What feeds one input: one upstream output, or several (fan-in, delivered as a list).
InputSource = OutputHandle | tuple[OutputHandle, ...]


@dataclass(frozen=True)
class Node:
    """One use of an op in a job, under a unique node name."""

    name: str
    op: OpDefinition
    inputs: Mapping[str, InputSource] = field(default_factory=dict)

    def upstream(self) -> list[str]:
        """Names of the nodes this node depends on, without duplicates, in input order."""
        seen: dict[str, None] = {}
        for source in self.inputs.values():
            for handle in source if isinstance(source, tuple) else (source,):
                seen.setdefault(handle.node, None)
        return list(seen)


@dataclass(frozen=True)
class EdgeDef:
    """``from_node.from_output`` feeds ``to_node.to_input``."""

    from_node: str
    from_output: str
    to_node: str
    to_input: str


@dataclass(frozen=True)
class JobDefinition:
    """A named graph of nodes; ``nodes`` is in a valid execution (topological) order."""

    name: str
    nodes: tuple[Node, ...]
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

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


def _build_job(
    fn: Callable[[], Any],
    name: str | None,
    description: str | None,
    tags: Mapping[str, str] | None,
) -> JobDefinition:
    if not callable(fn):
        raise DefinitionError(f"@job needs a function, got {fn!r}")
    job_name = check_name(name or fn.__name__, "job")
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
        description=description if description is not None else inspect.getdoc(fn) or "",
        tags={str(k): str(v) for k, v in (tags or {}).items()},
    )


@overload
def job(fn: Callable[[], Any], /) -> JobDefinition: ...


@overload
def job(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Callable[[Callable[[], Any]], JobDefinition]: ...


def job(
    fn: Callable[[], Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> JobDefinition | Callable[[Callable[[], Any]], JobDefinition]:
    """Declare a job, bare (``@job``) or with options (``@job(name=...)``).

    The body calls ops and wires outputs to inputs; it runs once, now, to build the graph.

    Args:
        fn: the job body (when used bare).
        name: job name; defaults to the function name.
        description: defaults to the function's docstring.
        tags: string key/value tags.
    """
    if fn is not None:
        return _build_job(fn, name, description, tags)

    def decorate(f: Callable[[], Any]) -> JobDefinition:
        return _build_job(f, name, description, tags)

    return decorate

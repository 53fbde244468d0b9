"""The asset graph of one repository, and the jobs that materialize parts of it.

:class:`AssetGraph` holds every asset a ``Definitions`` names (computed ones with their
op, external ones as bare specs) and the dependency edges between them. A dependency on
a key the repository does not define is kept as an edge to that key: the control plane
resolves it by key against the other locations (an asset of location B may depend on one
of location A).

``define_asset_job(name, selection)`` declares a job over a selection; ``Definitions``
resolves it against its graph into an ordinary :class:`~tether.sdk.JobDefinition` whose
nodes are the selected assets' ops (named after their keys) in dependency order, each
value read by a downstream asset in the job passed as an op output (the run worker loads
any other through the upstream's IO manager). Every repository
with assets also gets implicit jobs of all its computed assets (:data:`ASSET_JOB`, one per
partitions definition), which materializations of any selection run with a step
selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from tether.sdk._asset_key import AssetKey
from tether.sdk._asset_selection import AssetSelection, coerce_selection
from tether.sdk._assets import AssetsDefinition, AssetSpec
from tether.sdk._errors import DefinitionError
from tether.sdk._job import EXECUTORS, JobDefinition, Node, OutputHandle
from tether.sdk._op import check_name
from tether.sdk._partitions import PartitionsDefinition

#: Name of the implicit job of every computed asset (``__asset_job_<n>`` when the assets
#: have several partitions definitions, one job per definition).
ASSET_JOB = "__asset_job"


def _names(a: AssetsDefinition) -> str:
    return ", ".join(k.to_user_string() for k in a.keys)


class AssetGraph:
    """Every asset of a repository and the edges between them.

    Args:
        assets: the computed assets.
        specs: the external assets (no op here).

    Raises:
        DefinitionError: a key defined twice, or a dependency cycle.
    """

    def __init__(self, assets: Sequence[AssetsDefinition], specs: Sequence[AssetSpec]) -> None:
        self.computed: dict[AssetKey, AssetsDefinition] = {}
        self.specs: dict[AssetKey, AssetSpec] = {}
        ops: dict[str, AssetsDefinition] = {}
        for a in assets:
            for spec in a.specs:
                self._add(spec)
                self.computed[spec.key] = a
            clash = ops.setdefault(a.op.name, a)
            if clash is not a:
                raise DefinitionError(
                    f"two asset definitions ({_names(clash)} and {_names(a)}) would both be "
                    f"computed by an op named {a.op.name!r}"
                )
        for s in specs:
            self._add(s)
        self.upstream: dict[AssetKey, tuple[AssetKey, ...]] = {
            k: s.deps for k, s in self.specs.items()
        }
        down: dict[AssetKey, list[AssetKey]] = {}
        for key, ups in self.upstream.items():
            for up in ups:
                down.setdefault(up, []).append(key)
        self.downstream: dict[AssetKey, tuple[AssetKey, ...]] = {
            k: tuple(sorted(v)) for k, v in down.items()
        }
        try:
            order = TopologicalSorter({k: set(v) for k, v in self.upstream.items()})
            self._order = [k for k in order.static_order() if k in self.specs]
        except CycleError as err:
            cycle = " -> ".join(k.to_user_string() for k in err.args[1])
            raise DefinitionError(f"the asset graph has a cycle: {cycle}") from None

    def definitions(self, keys: Iterable[AssetKey]) -> list[AssetsDefinition]:
        """The definitions computing ``keys``, each once, upstream ones first."""
        seen: dict[int, AssetsDefinition] = {}
        for key in self.toposorted(keys):
            a = self.computed[key]
            seen.setdefault(id(a), a)
        # A multi-asset may come after an upstream of one key yet before another's: order
        # the definitions themselves by the dependencies between them.
        ids = {id(a): a for a in seen.values()}
        by_key = {k: id(a) for a in ids.values() for k in a.keys}
        graph = {
            i: {by_key[up] for s in a.specs for up in s.deps if by_key.get(up, i) != i}
            for i, a in ids.items()
        }
        try:
            order = list(TopologicalSorter(graph).static_order())
        except CycleError as err:
            cycle = " -> ".join(ids[i].op.name for i in err.args[1])
            raise DefinitionError(f"the assets' ops depend on each other: {cycle}") from None
        return [ids[i] for i in order if i in ids]

    def _add(self, spec: AssetSpec) -> None:
        if spec.key in self.specs:
            raise DefinitionError(f"asset {spec.key.to_user_string()!r} is defined twice")
        self.specs[spec.key] = spec

    @property
    def external_dependencies(self) -> frozenset[AssetKey]:
        """Keys some asset depends on that this repository does not define."""
        return frozenset(up for ups in self.upstream.values() for up in ups) - set(self.specs)

    def toposorted(self, keys: Iterable[AssetKey]) -> list[AssetKey]:
        """``keys`` in dependency order (upstream first; ties by key)."""
        wanted = set(keys)
        return [k for k in self._order if k in wanted]


@dataclass(frozen=True)
class UnresolvedAssetJob:
    """A job over an asset selection, made into a :class:`JobDefinition` by ``Definitions``.

    Create it with :func:`define_asset_job`.
    """

    name: str
    selection: AssetSelection
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    partitions_def: PartitionsDefinition | None = None
    executor: str = EXECUTORS[0]

    def resolve(
        self, graph: AssetGraph, resources: Mapping[str, Any] | None = None
    ) -> JobDefinition:
        """The job materializing the selected computed assets of ``graph``.

        Raises:
            DefinitionError: the selection is empty or unknown, or its assets have
                different partitions.
        """
        keys = [k for k in self.selection.resolve(graph) if k in graph.computed]
        if not keys:
            raise DefinitionError(f"asset job {self.name!r} selects no computed asset")
        return asset_job(
            graph,
            keys,
            name=self.name,
            description=self.description,
            tags=self.tags,
            partitions_def=self.partitions_def,
            executor=self.executor,
            resources=resources,
        )


def define_asset_job(
    name: str,
    selection: Any = None,
    *,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    executor: str = EXECUTORS[0],
) -> UnresolvedAssetJob:
    """Declare a job that materializes a selection of assets.

    Args:
        name: job name.
        selection: an :class:`AssetSelection`, keys (``"a/b"``, lists, asset definitions),
            or None for every computed asset.
        description: free text.
        tags: string tags of its runs.
        partitions_def: its partitions; default the selected assets' (they must agree).
        executor: ``in_process`` or ``multiprocess`` (see ``@job``).
    """
    if executor not in EXECUTORS:
        raise DefinitionError(f"asset job {name!r}: executor must be one of {EXECUTORS}")
    return UnresolvedAssetJob(
        name=check_name(name, "job"),
        selection=coerce_selection(selection),
        description=description,
        tags={str(k): str(v) for k, v in (tags or {}).items()},
        partitions_def=partitions_def,
        executor=executor,
    )


def _job_partitions(
    name: str, assets: Sequence[AssetsDefinition], given: PartitionsDefinition | None
) -> PartitionsDefinition | None:
    found: list[PartitionsDefinition] = []
    for a in assets:
        if a.partitions_def is not None and not any(a.partitions_def == p for p in found):
            found.append(a.partitions_def)
    if len(found) > 1:
        raise DefinitionError(
            f"asset job {name!r} selects assets with different partitions: "
            + ", ".join(sorted(_names(a) for a in assets if a.partitions_def))
        )
    if given is not None and found and found[0] != given:
        raise DefinitionError(f"asset job {name!r}: partitions_def differs from its assets'")
    return given if given is not None else (found[0] if found else None)


def asset_job(
    graph: AssetGraph,
    keys: Iterable[AssetKey],
    *,
    name: str,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    executor: str = EXECUTORS[0],
    resources: Mapping[str, Any] | None = None,
) -> JobDefinition:
    """The job whose nodes compute ``keys`` (computed assets of ``graph``) in order, with
    the repository's ``resources``."""
    selected = set(keys)
    assets = [a.subset(set(a.keys) & selected) for a in graph.definitions(selected)]
    node_of = {k: a.op.name for a in assets for k in a.keys}
    nodes: list[Node] = []
    for a in assets:
        # A value computed in the same run is passed as an op output; any other (an asset
        # outside the selection, of another location, or external) is loaded by the run
        # worker through the upstream's IO manager.
        inputs = {
            param: OutputHandle(node_of[up], graph.computed[up].output_names[up])
            for param, up in a.input_keys.items()
            if up in node_of
        }
        read = {node_of[up] for up in a.input_keys.values() if up in node_of}
        waits = {node_of[up] for s in a.specs for up in s.deps if up in node_of}
        after = tuple(sorted(waits - read - {a.op.name}))
        nodes.append(Node(name=a.op.name, op=a.op, inputs=inputs, after=after))
    return JobDefinition(
        name=name,
        nodes=tuple(nodes),
        description=description,
        tags={**(tags or {})},
        partitions_def=_job_partitions(name, assets, partitions_def),
        executor=executor,
        assets={a.op.name: a for a in assets},
        asset_graph=graph,
        resources=dict(resources or {}),
    )


def implicit_asset_jobs(
    graph: AssetGraph, resources: Mapping[str, Any] | None = None
) -> list[JobDefinition]:
    """The jobs of every computed asset: one, or one per partitions definition (each with
    the unpartitioned assets too)."""
    if not graph.computed:
        return []
    defs: list[PartitionsDefinition] = []
    for a in graph.computed.values():
        if a.partitions_def is not None and not any(a.partitions_def == p for p in defs):
            defs.append(a.partitions_def)
    if len(defs) <= 1:
        return [asset_job(graph, graph.computed, name=ASSET_JOB, resources=resources)]
    unpartitioned = [k for k, a in graph.computed.items() if a.partitions_def is None]
    return [
        asset_job(
            graph,
            [*unpartitioned, *(k for k, a in graph.computed.items() if a.partitions_def == p)],
            name=f"{ASSET_JOB}_{i}",
            resources=resources,
        )
        for i, p in enumerate(defs)
    ]


def select_assets(job: JobDefinition, selection: str) -> JobDefinition:
    """``job`` (an asset job) narrowed to the assets a ``tether/asset_selection`` tag
    (:data:`~tether.shared.wire.runs.ASSET_SELECTION_TAG`) names: only their steps run (a
    subsettable multi-asset computes only the selected ones); values of the others are
    loaded through their IO managers.

    Raises:
        DefinitionError: ``job`` is not an asset job, or the selection names assets it
            does not materialize (or subsets a multi-asset that cannot be subset).
    """
    if job.asset_graph is None:
        raise DefinitionError(f"job {job.name!r} is not an asset job: it cannot select assets")
    keys = {AssetKey.from_user_string(part) for part in selection.split(",") if part.strip()}
    own = {k for a in job.assets.values() for k in a.keys}
    unknown = sorted(k.to_user_string() for k in keys - own)
    if unknown or not keys:
        raise DefinitionError(
            f"asset selection {selection!r}: job {job.name!r} does not materialize "
            + (", ".join(unknown) or "an empty selection")
        )
    return asset_job(
        job.asset_graph,
        keys,
        name=job.name,
        description=job.description,
        tags=job.tags,
        partitions_def=job.partitions_def,
        executor=job.executor,
        resources=job.resources,
    )

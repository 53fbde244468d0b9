"""``AssetSelection``: which assets a job, a backfill or a materialization covers.

A selection is a small expression resolved against an :class:`~tether.sdk.AssetGraph`:
``AssetSelection.groups("marts").upstream() - AssetSelection.assets("raw/events")``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.sdk._asset_key import AssetKey, asset_keys
from tether.sdk._errors import DefinitionError

if TYPE_CHECKING:
    from tether.sdk._asset_graph import AssetGraph


class AssetSelection:
    """A set of assets, defined by keys, groups, prefixes and graph walks.

    Combine with ``|`` (union), ``&`` (intersection) and ``-`` (difference).
    """

    def resolve(self, graph: AssetGraph) -> frozenset[AssetKey]:
        """The keys of ``graph`` this selection names.

        Raises:
            DefinitionError: it names a key the graph does not have.
        """
        raise NotImplementedError

    @staticmethod
    def all() -> AssetSelection:
        """Every asset of the graph that Tether computes (external assets aside)."""
        return _All()

    @staticmethod
    def assets(*keys: Any) -> AssetSelection:
        """These assets (keys, ``"a/b"`` strings, lists, or asset definitions)."""
        return _Keys(asset_keys(keys))

    @staticmethod
    def groups(*names: str) -> AssetSelection:
        """Every computed asset of these groups."""
        return _Groups(tuple(names))

    @staticmethod
    def key_prefixes(*prefixes: str | Iterable[str]) -> AssetSelection:
        """Every computed asset whose key starts with one of these prefixes."""
        paths = tuple(
            tuple(p for p in prefix.split("/") if p) if isinstance(prefix, str) else tuple(prefix)
            for prefix in prefixes
        )
        return _Prefixes(paths)

    def upstream(self, depth: int | None = None, *, include_self: bool = True) -> AssetSelection:
        """This selection and what it depends on, ``depth`` levels up (None: all)."""
        return _Walk(self, depth, include_self, up=True)

    def downstream(self, depth: int | None = None, *, include_self: bool = True) -> AssetSelection:
        """This selection and what depends on it, ``depth`` levels down (None: all)."""
        return _Walk(self, depth, include_self, up=False)

    def __or__(self, other: AssetSelection) -> AssetSelection:
        return _Combined(self, _check(other), "|")

    def __and__(self, other: AssetSelection) -> AssetSelection:
        return _Combined(self, _check(other), "&")

    def __sub__(self, other: AssetSelection) -> AssetSelection:
        return _Combined(self, _check(other), "-")


def _check(other: object) -> AssetSelection:
    if not isinstance(other, AssetSelection):
        raise DefinitionError(f"cannot combine an AssetSelection with {other!r}")
    return other


def coerce_selection(value: Any) -> AssetSelection:
    """A selection from ``value``: a selection, one key/string/definition, or a list of them."""
    if isinstance(value, AssetSelection):
        return value
    if value is None:
        return _All()
    if isinstance(value, str | AssetKey) or hasattr(value, "keys"):
        return _Keys(asset_keys([value]))
    if isinstance(value, list | tuple | set | frozenset):
        return _Keys(asset_keys(value))
    raise DefinitionError(f"cannot select assets with {value!r}")


@dataclass(frozen=True)
class _All(AssetSelection):
    def resolve(self, graph: AssetGraph) -> frozenset[AssetKey]:
        return frozenset(graph.computed)


@dataclass(frozen=True)
class _Keys(AssetSelection):
    keys: tuple[AssetKey, ...]

    def resolve(self, graph: AssetGraph) -> frozenset[AssetKey]:
        unknown = [k.to_user_string() for k in self.keys if k not in graph.specs]
        if unknown:
            raise DefinitionError(f"selection names unknown asset(s): {', '.join(unknown)}")
        return frozenset(self.keys)


@dataclass(frozen=True)
class _Groups(AssetSelection):
    names: tuple[str, ...]

    def resolve(self, graph: AssetGraph) -> frozenset[AssetKey]:
        return frozenset(k for k in graph.computed if graph.specs[k].group_name in self.names)


@dataclass(frozen=True)
class _Prefixes(AssetSelection):
    prefixes: tuple[tuple[str, ...], ...]

    def resolve(self, graph: AssetGraph) -> frozenset[AssetKey]:
        return frozenset(k for k in graph.computed if any(k.has_prefix(p) for p in self.prefixes))


@dataclass(frozen=True)
class _Walk(AssetSelection):
    start: AssetSelection
    depth: int | None
    include_self: bool
    up: bool

    def resolve(self, graph: AssetGraph) -> frozenset[AssetKey]:
        start = self.start.resolve(graph)
        edges = graph.upstream if self.up else graph.downstream
        seen: set[AssetKey] = set()
        frontier = set(start)
        level = 0
        while frontier and (self.depth is None or level < self.depth):
            nxt = {n for k in frontier for n in edges.get(k, ()) if n in graph.specs} - seen
            seen |= nxt
            frontier = nxt
            level += 1
        return frozenset(seen | start if self.include_self else seen - start)


@dataclass(frozen=True)
class _Combined(AssetSelection):
    left: AssetSelection
    right: AssetSelection
    op: str

    def resolve(self, graph: AssetGraph) -> frozenset[AssetKey]:
        a, b = self.left.resolve(graph), self.right.resolve(graph)
        if self.op == "|":
            return a | b
        if self.op == "&":
            return a & b
        return a - b

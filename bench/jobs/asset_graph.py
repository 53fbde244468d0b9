"""The asset graph of the asset workload, generated the same way for every system.

Pure stdlib, like ``marks.py``: Tether's and Dagster's job modules import it in their own
interpreters and turn each :class:`Node` into an ``@asset`` of their SDK, so both systems
see the same keys and the same edges.

The graph is layered: asset ``i`` sits in layer ``i // width`` at position ``i % width``;
an asset of layer ``L > 0`` reads the assets of layer ``L - 1`` at positions ``p``,
``p + 1``, ... (``fan_in`` of them, modulo that layer's width). Layer 0 has no inputs.
Every compute function returns ``1 + sum(inputs)``: a small int, stored by each system's
default (filesystem, pickling) IO manager.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Assets of the materialized graph (the harness sets it only for the asset workload).
ASSETS_ENV = "BENCH_ASSETS"
#: Assets of the catalog location (the harness sets it only for the asset workload).
CATALOG_ENV = "BENCH_CATALOG_ASSETS"
#: Assets per layer of the generated graphs.
WIDTH = 10
#: Upstream assets each asset below the first layer reads.
FAN_IN = 2
#: Key prefix (a letter: keys are also op and parameter names) of each graph.
GRAPH_PREFIX = "g"
SOLO_PREFIX = "solo"
CATALOG_PREFIX = "c"
#: Group names, so a catalog query can tell the graphs apart.
GRAPH_GROUP = "bench_graph"
SOLO_GROUP = "bench_solo"
CATALOG_GROUP = "bench_catalog"


@dataclass(frozen=True)
class Node:
    """One asset: its key (one component) and the keys of the assets it reads."""

    name: str
    deps: tuple[str, ...]


def layered_dag(
    n: int, *, width: int = WIDTH, fan_in: int = FAN_IN, prefix: str = GRAPH_PREFIX
) -> list[Node]:
    """``n`` assets in layers of ``width``, each below the first reading ``fan_in`` of the
    layer above; in dependency order (every node after the ones it reads).

    Raises:
        ValueError: ``n`` < 1, ``width`` < 1, ``fan_in`` < 1, or a prefix that is not an
            identifier (keys are parameter names).
    """
    if n < 1 or width < 1 or fan_in < 1:
        raise ValueError(f"need n, width, fan_in >= 1, got {n}, {width}, {fan_in}")
    if not prefix.isidentifier():
        raise ValueError(f"prefix {prefix!r} must be a Python identifier")
    digits = len(str(n - 1))
    names = [f"{prefix}{i:0{digits}d}" for i in range(n)]
    nodes: list[Node] = []
    for i, name in enumerate(names):
        layer, pos = divmod(i, width)
        if layer == 0:
            nodes.append(Node(name, ()))
            continue
        above = names[(layer - 1) * width : layer * width]  # always a full layer
        parents = dict.fromkeys(above[(pos + k) % len(above)] for k in range(fan_in))
        nodes.append(Node(name, tuple(parents)))
    return nodes


def edge_count(nodes: list[Node]) -> int:
    """Dependency edges of the graph."""
    return sum(len(node.deps) for node in nodes)


def compute_fn(node: Node) -> Callable[..., int]:
    """The asset's function: keyword parameters named after the assets it reads (each SDK
    maps a parameter to the upstream asset of that name), returning ``1 + sum(inputs)``."""

    def compute(**upstream: Any) -> int:
        return 1 + sum(int(v) for v in upstream.values())

    compute.__name__ = compute.__qualname__ = node.name
    compute.__doc__ = f"Bench asset {node.name}: 1 + the sum of {len(node.deps)} inputs."
    params = [inspect.Parameter(d, inspect.Parameter.POSITIONAL_OR_KEYWORD) for d in node.deps]
    compute.__signature__ = inspect.Signature(params, return_annotation=int)  # type: ignore[attr-defined]
    compute.__annotations__ = {"return": int}
    return compute


def expected_values(nodes: list[Node]) -> dict[str, int]:
    """What each asset's value is after a full materialization (for checks)."""
    values: dict[str, int] = {}
    for node in nodes:
        values[node.name] = 1 + sum(values[d] for d in node.deps)
    return values


def size_from_env(name: str, default: int = 0) -> int:
    """The graph size an environment variable asks for; ``default`` when unset or empty.

    Raises:
        ValueError: a value that is not a non-negative integer.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must be >= 0")
    return value

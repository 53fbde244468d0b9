"""Layered layout of an op graph, drawn top to bottom as SVG.

A small Sugiyama-style layout, computed in Python so the page needs no JavaScript:

1. layering by longest path from the sources (every edge points to a lower layer);
2. a dummy node on every layer an edge crosses, so long edges are routed between nodes;
3. ordering within each layer by the barycenter of the neighbours in the adjacent layer,
   sweeping down and up a few times (fewer crossings);
4. coordinates: each layer is a centred row; edges are cubic curves through their dummies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Vertical distance between two layers' rows.
LAYER_GAP = 70.0
#: Horizontal gap between neighbouring boxes of a layer.
NODE_GAP = 28.0
NODE_HEIGHT = 36.0
#: Width a dummy node reserves, so long edges do not run through boxes.
DUMMY_WIDTH = 12.0
MARGIN = 16.0
#: Rough width of one character of the node label (monospace-ish 13px font).
CHAR_WIDTH = 7.6
MIN_NODE_WIDTH = 90.0
#: Barycenter sweeps (down + up each); a handful is enough for op graphs.
SWEEPS = 4


@dataclass(frozen=True)
class NodeBox:
    """A placed op: its box's top-left corner, size, and layer."""

    name: str
    layer: int
    x: float
    y: float
    width: float
    height: float

    @property
    def center_x(self) -> float:
        """Horizontal centre of the box."""
        return self.x + self.width / 2


@dataclass(frozen=True)
class EdgePath:
    """A drawn dependency from ``source`` to ``target`` through ``points`` (top to bottom)."""

    source: str
    target: str
    points: tuple[tuple[float, float], ...]

    @property
    def d(self) -> str:
        """The SVG path: one vertical-tangent cubic curve per pair of consecutive points."""
        (x0, y0), *rest = self.points
        parts = [f"M{x0:.1f},{y0:.1f}"]
        for x1, y1 in rest:
            mid = (y0 + y1) / 2
            parts.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
            x0, y0 = x1, y1
        return " ".join(parts)


@dataclass(frozen=True)
class DagLayout:
    """Boxes and edges of a graph, and the size of the picture."""

    nodes: tuple[NodeBox, ...]
    edges: tuple[EdgePath, ...]
    width: float
    height: float

    def node(self, name: str) -> NodeBox:
        """The box of node ``name``."""
        for box in self.nodes:
            if box.name == name:
                return box
        raise KeyError(name)


def assign_layers(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering: a source is on layer 0, any other node one below its lowest parent.

    A cycle (never produced by a valid job, but the UI must draw whatever it gets) is broken
    by releasing the remaining node with the fewest unplaced parents; its back edges then
    point upward.
    """
    parents: dict[str, set[str]] = {n: set() for n in nodes}
    children: dict[str, set[str]] = {n: set() for n in nodes}
    for source, target in edges:
        if source in parents and target in parents and source != target:
            parents[target].add(source)
            children[source].add(target)
    layer: dict[str, int] = {}
    waiting = {n: len(parents[n]) for n in nodes}
    ready = sorted(n for n, count in waiting.items() if count == 0)
    while len(layer) < len(parents):
        if not ready:
            # Only cycles remain: release one node deterministically.
            ready = [min((n for n in nodes if n not in layer), key=lambda n: (waiting[n], n))]
        node = ready.pop(0)
        if node in layer:
            continue
        layer[node] = max((layer[p] + 1 for p in parents[node] if p in layer), default=0)
        for child in sorted(children[node]):
            waiting[child] -= 1
            if waiting[child] == 0 and child not in layer:
                ready.append(child)
    return layer


def order_layers(
    layers: dict[str, int], edges: Iterable[tuple[str, str]]
) -> tuple[list[list[str]], dict[tuple[str, str], list[str]]]:
    """Order each layer by barycenters, with dummy nodes on the layers long edges cross.

    Returns:
        the rows (node names top to bottom, dummies included) and, for each downward edge,
        the dummies it passes through.
    """
    depth = max(layers.values(), default=-1) + 1
    rows: list[list[str]] = [[] for _ in range(depth)]
    for name in sorted(layers, key=lambda n: (layers[n], n)):
        rows[layers[name]].append(name)
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    chains: dict[tuple[str, str], list[str]] = {}
    for source, target in edges:
        if source not in layers or target not in layers or layers[target] <= layers[source]:
            continue
        chain = [f"\0{source}\0{target}\0{i}" for i in range(layers[source] + 1, layers[target])]
        chains[(source, target)] = chain
        path = [source, *chain, target]
        for i, dummy in enumerate(chain, start=layers[source] + 1):
            rows[i].append(dummy)
        for a, b in zip(path, path[1:], strict=False):
            down.setdefault(a, []).append(b)
            up.setdefault(b, []).append(a)

    def sweep(index: int, neighbours: dict[str, list[str]], reference: list[str]) -> None:
        position = {name: i for i, name in enumerate(reference)}
        current = {name: i for i, name in enumerate(rows[index])}

        def barycenter(name: str) -> float:
            linked = [position[n] for n in neighbours.get(name, []) if n in position]
            # A node with no neighbour there keeps its place.
            return sum(linked) / len(linked) if linked else float(current[name])

        rows[index].sort(key=lambda n: (barycenter(n), current[n]))

    for _ in range(SWEEPS):
        for i in range(1, depth):
            sweep(i, up, rows[i - 1])
        for i in range(depth - 2, -1, -1):
            sweep(i, down, rows[i + 1])
    return rows, chains


def node_width(name: str) -> float:
    """Width of the box that fits label ``name``."""
    return max(MIN_NODE_WIDTH, len(name) * CHAR_WIDTH + 24)


def layout_dag(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> DagLayout:
    """Lay out ``nodes`` and ``edges`` (pairs ``(upstream, downstream)``) top to bottom."""
    unique_edges = sorted({(s, t) for s, t in edges if s in nodes and t in nodes and s != t})
    layers = assign_layers(nodes, unique_edges)
    rows, chains = order_layers(layers, unique_edges)

    def width_of(name: str) -> float:
        return DUMMY_WIDTH if name.startswith("\0") else node_width(name)

    row_widths = [sum(width_of(n) for n in row) + NODE_GAP * max(len(row) - 1, 0) for row in rows]
    inner = max(row_widths, default=0.0)
    centers: dict[str, tuple[float, float]] = {}
    boxes: list[NodeBox] = []
    for index, row in enumerate(rows):
        x = MARGIN + (inner - row_widths[index]) / 2
        y = MARGIN + index * (NODE_HEIGHT + LAYER_GAP)
        for name in row:
            width = width_of(name)
            centers[name] = (x + width / 2, y)
            if not name.startswith("\0"):
                boxes.append(NodeBox(name, index, x, y, width, NODE_HEIGHT))
            x += width + NODE_GAP
    paths: list[EdgePath] = []
    for source, target in unique_edges:
        sx, sy = centers[source]
        tx, ty = centers[target]
        through = [
            (centers[d][0], centers[d][1] + NODE_HEIGHT / 2)
            for d in chains.get((source, target), [])
        ]
        points = ((sx, sy + NODE_HEIGHT), *through, (tx, ty))
        paths.append(EdgePath(source, target, points))
    height = MARGIN * 2 + len(rows) * NODE_HEIGHT + max(len(rows) - 1, 0) * LAYER_GAP
    return DagLayout(
        nodes=tuple(boxes),
        edges=tuple(paths),
        width=inner + MARGIN * 2,
        height=height if rows else MARGIN * 2,
    )

"""Geometry of the UI's pictures: the op-graph layout and the step timeline."""

from __future__ import annotations

import random

import pytest
from tether.controlplane.ui.dag import NODE_HEIGHT, assign_layers, layout_dag
from tether.controlplane.ui.gantt import (
    LABEL_WIDTH,
    MAX_TICKS,
    StepSpan,
    gantt_chart,
    step_spans,
    tick_step,
)


def random_dag(seed: int, size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """A random DAG: edges only go from a lower to a higher index (names shuffled)."""
    rng = random.Random(seed)
    names = [f"op_{i}" for i in range(size)]
    rng.shuffle(names)
    edges = [
        (names[i], names[j])
        for i in range(size)
        for j in range(i + 1, size)
        if rng.random() < 2.5 / size
    ]
    return names, edges


@pytest.mark.parametrize("seed", range(20))
def test_layers_respect_dependencies_and_no_edge_goes_upward(seed: int) -> None:
    nodes, edges = random_dag(seed, size=4 + seed)
    layout = layout_dag(nodes, edges)
    assert {box.name for box in layout.nodes} == set(nodes)
    for edge in layout.edges:
        source, target = layout.node(edge.source), layout.node(edge.target)
        assert source.layer < target.layer
        # The path starts at the bottom of the source and ends at the top of the target...
        assert edge.points[0] == (source.center_x, source.y + NODE_HEIGHT)
        assert edge.points[-1] == (target.center_x, target.y)
        # ...and every point is lower than the one before: nothing is drawn upward.
        ys = [y for _, y in edge.points]
        assert ys == sorted(ys) and len(set(ys)) == len(ys)
    assert len(layout.edges) == len(set(edges))


@pytest.mark.parametrize("seed", range(10))
def test_boxes_never_overlap_and_fit_the_picture(seed: int) -> None:
    nodes, edges = random_dag(seed, size=12)
    layout = layout_dag(nodes, edges)
    by_layer: dict[int, list] = {}
    for box in layout.nodes:
        by_layer.setdefault(box.layer, []).append(box)
        assert 0 <= box.x and box.x + box.width <= layout.width
        assert 0 <= box.y and box.y + box.height <= layout.height
    for boxes in by_layer.values():
        boxes.sort(key=lambda b: b.x)
        for left, right in zip(boxes, boxes[1:], strict=False):
            assert left.x + left.width < right.x


def test_longest_path_layering() -> None:
    # a -> b -> c and a -> c: c sits below b, not beside it.
    assert assign_layers(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")]) == {
        "a": 0,
        "b": 1,
        "c": 2,
    }


def test_a_long_edge_is_routed_through_the_layers_it_crosses() -> None:
    layout = layout_dag(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")])
    (long_edge,) = [e for e in layout.edges if (e.source, e.target) == ("a", "d")]
    assert len(long_edge.points) == 4  # start, a bend on each of the 2 middle layers, end
    assert long_edge.d.startswith("M") and long_edge.d.count("C") == 3


def test_barycenter_ordering_uncrosses_a_crossed_pair() -> None:
    # Sorted by name the layers are [a, b] over [x, y], and a -> y, b -> x cross; ordering
    # by barycenter puts each child under its parent.
    layout = layout_dag(["a", "b", "x", "y"], [("a", "y"), ("b", "x")])
    a, b, x, y = (layout.node(n) for n in "abxy")
    assert (a.x < b.x) == (y.x < x.x)


def test_a_cycle_is_still_drawn_and_layout_terminates() -> None:
    layout = layout_dag(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")])
    assert {box.name for box in layout.nodes} == {"a", "b", "c"}


def test_an_empty_graph_has_an_empty_picture() -> None:
    layout = layout_dag([], [])
    assert layout.nodes == () and layout.edges == () and layout.height > 0


def events(*rows: tuple[str, str | None, float]) -> list[dict]:
    return [{"eventType": t, "stepKey": s, "timestamp": at} for t, s, at in rows]


def test_step_spans_from_events() -> None:
    spans = step_spans(
        events(
            ("RUN_START", None, 0.0),
            ("STEP_START", "a", 1.0),
            ("LOG", "a", 1.5),
            ("STEP_SUCCESS", "a", 3.0),
            ("STEP_START", "b", 3.0),
            ("STEP_FAILURE", "b", 4.0),
            ("STEP_SKIPPED", "c", 4.0),
            ("STEP_START", "d", 3.5),
        )
    )
    assert spans == [
        StepSpan("a", 1.0, 3.0, "success"),
        StepSpan("b", 3.0, 4.0, "failure"),
        StepSpan("d", 3.5, None, "running"),
        StepSpan("c", 4.0, 4.0, "skipped"),
    ]


def test_gantt_bars_are_proportional_to_time() -> None:
    spans = [StepSpan("a", 100.0, 102.0, "success"), StepSpan("b", 102.0, None, "running")]
    chart = gantt_chart(spans, origin=100.0, until=110.0, width=1170.0)
    plot = chart.width - LABEL_WIDTH  # 1000 px for 10 s
    a, b = chart.bars
    assert a.x == pytest.approx(LABEL_WIDTH) and a.width == pytest.approx(plot * 0.2)
    # A running step reaches "until".
    assert b.x == pytest.approx(LABEL_WIDTH + plot * 0.2)
    assert b.x + b.width == pytest.approx(chart.width)
    assert b.duration_s == pytest.approx(8.0)
    assert b.y > a.y and chart.height >= b.y + b.height
    # Ticks start at the origin, stay inside, and are few.
    assert chart.ticks[0].x == pytest.approx(LABEL_WIDTH) and chart.ticks[0].label == "+0s"
    assert all(LABEL_WIDTH <= t.x <= chart.width + 1e-6 for t in chart.ticks)
    assert len(chart.ticks) <= MAX_TICKS + 1


def test_an_instant_step_stays_visible_inside_the_chart() -> None:
    chart = gantt_chart([StepSpan("a", 5.0, 5.0, "skipped")], origin=0.0, until=5.0, width=500.0)
    (bar,) = chart.bars
    assert bar.width > 0 and bar.x + bar.width <= chart.width


def test_short_runs_get_millisecond_ticks() -> None:
    chart = gantt_chart([StepSpan("a", 0.0, 0.047, "success")], origin=0.0, until=0.047)
    assert [t.label for t in chart.ticks] == ["+0s", "+10ms", "+20ms", "+30ms", "+40ms"]


@pytest.mark.parametrize("span", [0.003, 0.05, 0.9, 7, 59, 600, 5000, 86400 * 3])
def test_tick_step_gives_at_most_max_ticks(span: float) -> None:
    step = tick_step(span)
    assert span / step <= MAX_TICKS

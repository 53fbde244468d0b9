"""Step timeline of a run: spans from step events, and the geometry of an SVG Gantt chart."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Width of the step-name column left of the bars.
LABEL_WIDTH = 170.0
ROW_HEIGHT = 26.0
BAR_HEIGHT = 16.0
AXIS_HEIGHT = 22.0
#: Narrowest bar drawn, so instant steps stay visible.
MIN_BAR_WIDTH = 3.0
#: Candidate tick spacings in seconds; the smallest giving at most MAX_TICKS ticks wins.
TICK_STEPS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
)
MAX_TICKS = 8


@dataclass(frozen=True)
class StepSpan:
    """When a step ran, from its events.

    Attributes:
        step_key: the step.
        start: STEP_START time (epoch seconds).
        end: STEP_SUCCESS / STEP_FAILURE / STEP_SKIPPED time; None while it runs.
        status: ``running``, ``success``, ``failure`` or ``skipped``.
    """

    step_key: str
    start: float
    end: float | None
    status: str


def step_spans(events: Iterable[Mapping[str, Any]]) -> list[StepSpan]:
    """Spans of every step that started or was skipped, in order of start.

    ``events`` are GraphQL ``RunEvent`` dicts (``eventType``, ``timestamp``, ``stepKey``).
    A retried step keeps its first start; its last outcome wins.
    """
    starts: dict[str, float] = {}
    ends: dict[str, tuple[float, str]] = {}
    for event in events:
        step = event.get("stepKey")
        if not step:
            continue
        kind, at = event["eventType"], float(event["timestamp"])
        if kind == "STEP_START":
            starts.setdefault(step, at)
            ends.pop(step, None)
        elif kind == "STEP_SUCCESS":
            ends[step] = (at, "success")
        elif kind == "STEP_FAILURE":
            ends[step] = (at, "failure")
        elif kind == "STEP_SKIPPED":
            starts.setdefault(step, at)
            ends[step] = (at, "skipped")
    spans = []
    for step, start in starts.items():
        end, status = ends.get(step, (None, "running"))
        spans.append(StepSpan(step, start, end, status))
    return sorted(spans, key=lambda s: (s.start, s.step_key))


@dataclass(frozen=True)
class Bar:
    """One step's bar: its row and horizontal extent in chart pixels."""

    step_key: str
    status: str
    x: float
    y: float
    width: float
    height: float
    duration_s: float


@dataclass(frozen=True)
class Tick:
    """A vertical grid line with its time label (seconds after the origin)."""

    x: float
    label: str


@dataclass(frozen=True)
class GanttChart:
    """Everything the template draws."""

    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    width: float
    height: float
    label_width: float
    row_height: float


def tick_step(span_s: float) -> float:
    """The smallest candidate spacing that gives at most :data:`MAX_TICKS` ticks over ``span_s``."""
    for step in TICK_STEPS:
        if span_s / step <= MAX_TICKS:
            return step
    return TICK_STEPS[-1] * max(1, int(span_s / TICK_STEPS[-1] / MAX_TICKS) + 1)


def format_offset(seconds: float) -> str:
    """A tick label: ``+20ms``, ``+1.5s``, ``+2m``, ``+1h30m``."""
    if 0 < seconds < 1:
        return f"+{seconds * 1000:g}ms"
    if seconds < 60:
        return f"+{seconds:g}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"+{minutes:g}m" + (f"{rest:g}s" if rest else "")
    hours, rest = divmod(seconds, 3600)
    return f"+{hours:g}h" + (f"{rest / 60:g}m" if rest else "")


def gantt_chart(
    spans: Iterable[StepSpan], *, origin: float, until: float, width: float = 900.0
) -> GanttChart:
    """Place ``spans`` on a time axis from ``origin`` to ``until`` (epoch seconds).

    A running step's bar reaches ``until`` (now, or the run's end). ``width`` is the whole
    chart's, step labels included.
    """
    spans = list(spans)
    until = max(until, origin, *(s.end or s.start for s in spans)) if spans else max(until, origin)
    total = max(until - origin, 1e-3)
    plot = width - LABEL_WIDTH

    def x_of(at: float) -> float:
        return LABEL_WIDTH + (at - origin) / total * plot

    bars = []
    for row, span in enumerate(spans):
        end = span.end if span.end is not None else until
        x = x_of(span.start)
        bar_width = max(x_of(end) - x, MIN_BAR_WIDTH)
        bars.append(
            Bar(
                step_key=span.step_key,
                status=span.status,
                # A minimum-width bar at the very end stays inside the chart.
                x=min(x, width - bar_width),
                y=AXIS_HEIGHT + row * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) / 2,
                width=bar_width,
                height=BAR_HEIGHT,
                duration_s=end - span.start,
            )
        )
    step = tick_step(total)
    ticks = []
    n = 0
    while n * step <= total + 1e-9:
        ticks.append(Tick(x=x_of(origin + n * step), label=format_offset(round(n * step, 6))))
        n += 1
    return GanttChart(
        bars=tuple(bars),
        ticks=tuple(ticks),
        width=width,
        height=AXIS_HEIGHT + max(len(bars), 1) * ROW_HEIGHT,
        label_width=LABEL_WIDTH,
        row_height=ROW_HEIGHT,
    )

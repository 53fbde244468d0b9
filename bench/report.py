"""Results of a benchmark run and their rendering as markdown tables (pure, no I/O but JSON).

A :class:`Measurement` is one number of one system in one workload. Tables put every
system of a (workload, metric) pair side by side with a ratio against the baseline system
(``tether-cold`` unless told otherwise), phrased so that nobody has to guess which way the
ratio goes: ``3.1x slower``, ``2.0x faster``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BASELINE = "tether-cold"


@dataclass(frozen=True)
class Measurement:
    """One number.

    Attributes:
        workload: e.g. ``storm``, ``pickup``, ``events``, ``footprint``, ``limits``.
        case: the workload's parameter, e.g. ``N=20``; empty when there is none.
        metric: what is measured, e.g. ``wall``, ``runs/s``, ``p50``.
        system: ``tether-cold``, ``dagster``, ``prefect``, ``limit: bare work``...
        value: the number (None when the system could not do it; see ``note``).
        unit: ``s``, ``runs/s``, ``MB``...
        higher_is_better: how to phrase the ratio.
        note: why a value is missing, or a detail worth a footnote.
    """

    workload: str
    case: str
    metric: str
    system: str
    value: float | None
    unit: str
    higher_is_better: bool = False
    note: str = ""


@dataclass
class Report:
    """Everything one harness run measured, with the facts needed to read it."""

    facts: dict[str, Any] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)

    def add(self, *items: Measurement) -> None:
        """Record measurements."""
        self.measurements.extend(items)

    def to_json(self) -> str:
        """Serialize (the plot script and later comparisons read this)."""
        return json.dumps(
            {"facts": self.facts, "measurements": [asdict(m) for m in self.measurements]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            facts=data.get("facts", {}),
            measurements=[Measurement(**m) for m in data.get("measurements", [])],
        )

    def save(self, path: Path) -> None:
        """Write JSON to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())


def merge(reports: Iterable[Report]) -> Report:
    """Combine reports (e.g. one system re-run later): later numbers replace earlier ones
    with the same (workload, case, metric, system); dict facts are merged key by key."""
    facts: dict[str, Any] = {}
    by_key: dict[tuple[str, str, str, str], Measurement] = {}
    for report in reports:
        for key, value in report.facts.items():
            if isinstance(value, dict) and isinstance(facts.get(key), dict):
                facts[key] = {**facts[key], **value}
            elif key == "date" and key in facts and facts[key] != value:
                facts[key] = f"{facts[key]}; {value}"
            else:
                facts[key] = value
        for m in report.measurements:
            by_key[(m.workload, m.case, m.metric, m.system)] = m
    return Report(facts=facts, measurements=list(by_key.values()))


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """Median (for completeness next to :func:`percentile`)."""
    return statistics.median(values)


def format_value(value: float | None, unit: str) -> str:
    """Human form: 3 significant digits, thousands separators for big numbers."""
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def ratio_text(
    value: float | None, base: float | None, higher_is_better: bool, *, speed: bool = True
) -> str:
    """``value`` against ``base``: ``2.5x slower`` (times, rates) or ``2.5x worse`` (memory).

    ``1.0x (same)`` when within 5%; empty when either side is missing or not positive.
    """
    if value is None or base is None or value <= 0 or base <= 0:
        return ""
    factor = value / base if higher_is_better else base / value
    if 0.95 <= factor <= 1.05:
        return "1.0x (same)"
    good, bad = ("faster", "slower") if speed else ("better", "worse")
    if factor > 1:
        return f"{factor:.1f}x {good}"
    return f"{1 / factor:.1f}x {bad}"


#: Tables too wide and too noisy per cell for ratio columns.
NO_RATIO_WORKLOADS = frozenset(
    {
        "pickup breakdown",
        "storm CPU by process",
        "scale pickup breakdown",
        "scale CPU by process",
    }
)

#: Metrics that are not speeds: their ratios read better/worse instead of faster/slower.
NON_SPEED_UNITS = frozenset({"MB", "CPU s/run", "CPU s", ""})


def tables(report: Report, baseline: str = BASELINE) -> str:
    """One markdown table per (workload, case), systems as rows, metrics as columns.

    Each metric column is followed by a ratio column against ``baseline`` when the
    baseline has that metric.
    """
    out: list[str] = []
    for (workload, case), rows in _grouped(report.measurements):
        metrics: list[tuple[str, str, bool]] = []
        for m in rows:
            key = (m.metric, m.unit, m.higher_is_better)
            if key not in metrics:
                metrics.append(key)
        systems: list[str] = []
        for m in rows:
            if m.system not in systems:
                systems.append(m.system)
        # The baseline first, the limits last, the rest in the order they were measured.
        systems.sort(key=lambda s: (s != baseline, s.startswith("limit")))
        by = {(m.system, m.metric): m for m in rows}
        base_present = workload not in NO_RATIO_WORKLOADS and any(
            (baseline, metric) in by for metric, _, _ in metrics
        )
        title = f"### {workload}" + (f" ({case})" if case else "")
        header = ["system"]
        for metric, _unit, _ in metrics:
            header.append(metric)
            if base_present:
                header.append(f"vs {baseline}")
        lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        notes: list[str] = []
        for system in systems:
            cells = [system]
            for metric, unit, hib in metrics:
                m = by.get((system, metric))
                cells.append(format_value(m.value, unit) if m else "")
                if m is not None and m.note:
                    notes.append(f"{system}, {metric}: {m.note}")
                if base_present:
                    base = by.get((baseline, metric))
                    if m is None or base is None or system == baseline:
                        cells.append("")
                    else:
                        cells.append(
                            ratio_text(m.value, base.value, hib, speed=unit not in NON_SPEED_UNITS)
                        )
            lines.append("| " + " | ".join(cells) + " |")
        if notes:
            lines.append("")
            lines.extend(f"- {n}" for n in dict.fromkeys(notes))
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _grouped(
    measurements: Iterable[Measurement],
) -> list[tuple[tuple[str, str], list[Measurement]]]:
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.workload, m.case), []).append(m)
    return list(groups.items())


def facts_block(facts: dict[str, Any]) -> str:
    """The machine and version facts as a markdown bullet list."""
    lines: list[str] = []
    for key, value in facts.items():
        if isinstance(value, dict):
            lines.append(f"- {key}:")
            lines.extend(f"  - {k}: {_fact(v)}" for k, v in value.items())
        else:
            lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def _fact(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def ratio_cell(value: float | None, base: float | None, higher_is_better: bool, unit: str) -> str:
    """``value / base`` as a number, with the phrase of :func:`ratio_text`:
    ``0.50 (2.0x faster)``; empty when either side is missing or not positive."""
    if value is None or base is None or value <= 0 or base <= 0:
        return ""
    phrase = ratio_text(value, base, higher_is_better, speed=unit not in NON_SPEED_UNITS)
    return f"{value / base:.2f} ({phrase})"


def ratio_table(report: Report, workload: str, baseline: str, other: str) -> str:
    """One markdown table of ``workload``'s numbers on two systems: a row per (case,
    metric) measured on both, with both values and ``other / baseline``."""
    by = {(m.case, m.metric, m.system): m for m in report.measurements if m.workload == workload}
    rows: list[str] = []
    for m in report.measurements:
        if m.workload != workload or m.system != baseline:
            continue
        o = by.get((m.case, m.metric, other))
        if o is None:
            continue
        what = f"{m.case}: {m.metric}" if m.case else m.metric
        cells = [
            what,
            format_value(m.value, m.unit),
            format_value(o.value, o.unit),
            ratio_cell(o.value, m.value, m.higher_is_better, m.unit),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    title = f"### {workload}: {other} against {baseline}"
    if not rows:
        return f"{title}\n\nno number measured on both\n"
    header = f"| measurement | {baseline} | {other} | {other} / {baseline} |"
    return "\n".join([title, "", header, "|---|---:|---:|---|", *rows]) + "\n"

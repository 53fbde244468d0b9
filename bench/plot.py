"""Draw ``latest.json`` as a PNG. Runs in the harness's tools venv (matplotlib lives there).

Usage: ``python plot.py RESULTS.json OUT.png`` (``python -m bench`` calls it for you).
Only the standard library and matplotlib: it must not import Tether or the harness.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: (workload, metric, title, log scale) of each panel.
PANELS = [
    ("storm", "wall", "Run storm: wall time until all runs finished (s, lower is better)", True),
    ("pickup", "p50", "Pickup latency p50: submit to first user-code line (s)", True),
    ("pickup", "p95", "Pickup latency p95 (s)", True),
    (
        "events",
        "events/s",
        "Event throughput: log events stored per second (higher is better)",
        True,
    ),
    ("footprint", "RSS", "Idle footprint: resident memory of all services (MB)", False),
    ("storm", "CPU/run", "CPU seconds per run (all processes of the system)", False),
    ("schedule", "max", "Schedule lateness max: tick to first user-code line (s)", False),
]


def main(src: Path, out: Path) -> None:
    """Render every panel that has data."""
    data = json.loads(src.read_text())
    rows = [m for m in data["measurements"] if m["value"] is not None]
    panels = [p for p in PANELS if any(m["workload"] == p[0] and m["metric"] == p[1] for m in rows)]
    if not panels:
        return
    # One color per system across every panel.
    everyone = list(dict.fromkeys(m["system"] for m in rows))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {s: palette[i % len(palette)] for i, s in enumerate(everyone)}
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for ax, (workload, metric, title, log) in zip(axes[:, 0], panels, strict=True):
        picked = [m for m in rows if m["workload"] == workload and m["metric"] == metric]
        cases = list(dict.fromkeys(m["case"] for m in picked))
        systems = list(dict.fromkeys(m["system"] for m in picked))
        width = 0.8 / max(len(systems), 1)
        for i, system in enumerate(systems):
            xs, ys = [], []
            for j, case in enumerate(cases):
                value = next(
                    (m["value"] for m in picked if m["system"] == system and m["case"] == case),
                    None,
                )
                if value is not None:
                    xs.append(j + i * width)
                    ys.append(value)
            bars = ax.bar(xs, ys, width, label=system, color=color[system])
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(cases))], cases)
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    facts = data.get("facts", {})
    fig.suptitle(f"Tether bench, {facts.get('date', '')}: {facts.get('machine', '')}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

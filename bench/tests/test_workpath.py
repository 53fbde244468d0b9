"""The work-path benchmark's pure part: its summaries and table (it measures nothing here)."""

from __future__ import annotations

from bench.workpath import Round, table


def test_work_path_rounds_summarise_and_tabulate_per_side() -> None:
    raw = Round("raw", pickup_ms=[1.0, 2.0, 3.0], burst_s=2.0, publish_s=1.0, items=1000)
    fast = Round("faststream", pickup_ms=[2.0, 4.0], burst_s=4.0, publish_s=2.0, items=1000)
    assert raw.summary() == {
        "side": "raw",
        "pickup_p50_ms": 2.0,
        "pickup_p95_ms": 2.9,
        "burst_items_per_s": 500,
        "publish_items_per_s": 1000,
    }
    lines = table([raw, fast]).splitlines()
    assert lines[2] == "| raw | 2.0 | 2.9 | 500 | 1000 |"
    assert lines[-1] == "| **faststream (median of rounds)** | 3.00 | 3.90 | 250 | 500 |"

"""The launcher start benchmark's pure part: its summary (it measures nothing here)."""

from __future__ import annotations

from bench.startbench import StartTimes


def test_start_times_summarise_in_milliseconds_and_seconds() -> None:
    times = StartTimes(
        mode="warm",
        runs=4,
        start_latencies=[0.4, 0.1, 0.3, 0.2],
        run_latencies=[1.0, 1.0, 1.0, 1.5],
        burst_wall=2.34567,
        warm_runs=3,
    )
    assert times.summary() == {
        "mode": "warm",
        "runs": 4,
        "start_median_ms": 250.0,
        "start_p95_ms": 400.0,
        "sequential_total_s": 4.5,
        "burst_wall_s": 2.346,
        "warm_runs": 3,
    }

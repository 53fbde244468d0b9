"""Pure parts of the schedule-precision workload: tick choice, mark parsing, tick matching.

Nothing here starts a system or waits for a clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main, parse_args
from bench.workloads import match_ticks, read_labeled_marks, ticks_after


def test_ticks_start_on_a_whole_minute_at_least_the_lead_ahead() -> None:
    assert ticks_after(999_990.0, 3) == [1_000_020.0, 1_000_080.0, 1_000_140.0]
    # 1,000,005 + 20 s lead is past the minute at 1,000,020: the next one is the first tick.
    assert ticks_after(1_000_005.0, 2) == [1_000_080.0, 1_000_140.0]


def test_read_labeled_marks_keeps_only_the_label(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    marks.write_text("12.5 scheduled\n10.0 first\nbad scheduled\n11.0 scheduled\n")
    assert read_labeled_marks(marks, "scheduled") == [11.0, 12.5]
    assert read_labeled_marks(tmp_path / "missing.txt", "scheduled") == []


def test_match_ticks_measures_lateness_and_counts_misses_and_extras() -> None:
    ticks = [600.0, 660.0, 720.0]
    # 599 is 1 s early (Prefect's prefetch), 661.5 is 1.5 s late, 662 a second start of
    # the same tick, 540.5 belongs to a tick before the workload; 720 has none.
    lateness, extra = match_ticks(ticks, [540.5, 599.0, 661.5, 662.0])
    assert lateness == {600.0: pytest.approx(-1.0), 660.0: pytest.approx(1.5)}
    assert extra == 1


def test_schedule_runs_alone_and_takes_its_minutes() -> None:
    assert parse_args(["--workloads", "schedule", "--schedule-minutes", "2"]).schedule_minutes == 2
    assert "schedule" not in parse_args([]).workloads
    with pytest.raises(SystemExit, match="on its own"):
        main(["--workloads", "schedule,pickup", "--systems", "tether-cold"])

"""Pure parts of the harness: percentiles, number and ratio formatting, tables, parsing.

Nothing here starts a system or times anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import parse_args, resolve_systems
from bench.processes import read_stat, tree
from bench.report import Measurement, Report, format_value, percentile, ratio_text, tables
from bench.workloads import read_marks


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(range(1, 21)), 95) == pytest.approx(19.05)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (None, "s", "n/a"),
        (0.12345, "s", "0.123 s"),
        (3.14159, "s", "3.14 s"),
        (42.42, "s", "42.4 s"),
        (512.4, "MB", "512 MB"),
        (17234.6, "msgs/s", "17,235 msgs/s"),
        (7.0, "", "7.00"),
    ],
)
def test_format_value(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_ratio_text_says_which_way() -> None:
    # Times: lower is better.
    assert ratio_text(10.0, 2.0, higher_is_better=False) == "5.0x slower"
    assert ratio_text(1.0, 4.0, higher_is_better=False) == "4.0x faster"
    # Rates: higher is better.
    assert ratio_text(100.0, 50.0, higher_is_better=True) == "2.0x faster"
    assert ratio_text(25.0, 50.0, higher_is_better=True) == "2.0x slower"
    # Memory: better/worse.
    assert ratio_text(600.0, 300.0, higher_is_better=False, speed=False) == "2.0x worse"
    assert ratio_text(1.02, 1.0, higher_is_better=False) == "1.0x (same)"
    assert ratio_text(None, 1.0, higher_is_better=False) == ""
    assert ratio_text(1.0, 0.0, higher_is_better=False) == ""


def test_tables_put_systems_side_by_side_with_ratios_against_the_baseline() -> None:
    report = Report()
    report.add(
        Measurement("storm", "N=20", "wall", "tether-cold", 10.0, "s"),
        Measurement("storm", "N=20", "wall", "dagster", 35.0, "s", note="1 of 20 runs failed"),
        Measurement("storm", "N=20", "runs/s", "tether-cold", 2.0, "runs/s", True),
        Measurement("storm", "N=20", "runs/s", "dagster", 0.5, "runs/s", True),
        Measurement("nats", "1 msgs", "publish", "limit: raw NATS JetStream", 1e4, "msgs/s", True),
    )
    text = tables(report)
    assert "### storm (N=20)" in text
    assert "| system | wall | vs tether-cold | runs/s | vs tether-cold |" in text
    assert "| dagster | 35.0 s | 3.5x slower | 0.500 runs/s | 4.0x slower |" in text
    assert "| tether-cold | 10.0 s |  | 2.00 runs/s |  |" in text
    assert "- dagster, wall: 1 of 20 runs failed" in text
    # No baseline in this group: no ratio columns.
    assert "| system | publish |\n" in text


def test_report_round_trips_through_json() -> None:
    report = Report(facts={"date": "today", "versions": {"dagster": "1.13.27"}})
    report.add(Measurement("pickup", "20 tries", "p50", "prefect", None, "s", note="failed"))
    again = Report.from_json(report.to_json())
    assert again == report


def test_read_marks_skips_garbage(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    assert read_marks(marks) == []
    marks.write_text("1700000000.5 first\nnot a number\n1700000001.25 first\n")
    assert read_marks(marks) == [1700000000.5, 1700000001.25]


def test_cli_parsing_and_system_aliases() -> None:
    args = parse_args(["--systems", "tether,prefect", "--n", "20,100", "--tries", "5"])
    assert resolve_systems(args.systems.split(",")) == ["tether-cold", "tether-warm", "prefect"]
    assert args.n == "20,100" and args.tries == 5
    with pytest.raises(SystemExit):
        resolve_systems(["airflow"])


def test_process_tree_of_this_process() -> None:
    import os

    me = read_stat(os.getpid())
    assert me is not None and me.rss_bytes > 0 and me.cpu_s >= 0
    assert os.getpid() in {s.pid for s in tree([os.getpid()])}
    assert read_stat(2**22 + 1) is None


def test_breakdown_measures_each_stage_from_the_previous_milestone() -> None:
    from bench.workloads import breakdown

    first = {"RUN_ENQUEUED": 100.05, "RUN_STARTING": 100.25, "RUN_START": 100.85}
    stages = breakdown(100.0, 101.0, 101.5, first)
    assert stages == pytest.approx(
        {
            "submit->RUN_ENQUEUED": 0.05,
            "->RUN_STARTING": 0.2,
            "->RUN_START": 0.6,
            "->user code": 0.15,  # no STEP_START: measured from RUN_START
            "->SUCCESS visible": 0.5,
        }
    )


def test_merge_lets_later_reports_replace_numbers() -> None:
    from bench.report import merge

    first = Report(facts={"date": "d1", "versions": {"dagster": "1"}})
    first.add(Measurement("storm", "N=20", "wall", "tether-cold", 10.0, "s"))
    first.add(Measurement("storm", "N=20", "wall", "dagster", 30.0, "s"))
    second = Report(facts={"date": "d2", "versions": {"prefect": "3"}})
    second.add(Measurement("storm", "N=20", "wall", "tether-cold", 8.0, "s"))
    merged = merge([first, second])
    assert merged.facts["versions"] == {"dagster": "1", "prefect": "3"}
    assert merged.facts["date"] == "d1; d2"
    walls = {m.system: m.value for m in merged.measurements}
    assert walls == {"tether-cold": 8.0, "dagster": 30.0}


def test_profile_summary_of_collapsed_stacks() -> None:
    from bench.profile import parse_collapsed, summarize

    stacks = parse_collapsed(
        'process 1:"python -m x";run (shared/x.py:10);insert (sa/orm.py:5) 30\n'
        'process 1:"python -m x";run (shared/x.py:12);encode (shared/y.py:3) 10\n'
        "garbage line\n"
    )
    summary = summarize(stacks)
    assert summary["total"] == 40
    assert summary["leaf"][0] == ("insert (sa/orm.py)", 30)
    assert ("run (shared/x.py)", 40) in summary["tether"]
    assert dict(summary["packages"]) == {"shared": 40, "sa": 30}

"""Generate ``data/dagster_cron_ticks.json``: Dagster's ticks for the DST cases of test_cron_dst.

Not a test and not part of the workspace: run it with Dagster installed in a venv of its own
(Dagster is a benchmark peer, see bench/; 1.13.27 produced the checked-in file)::

    uv venv /tmp/dagster-venv && VIRTUAL_ENV=/tmp/dagster-venv uv pip install dagster==1.13.27
    /tmp/dagster-venv/bin/python shared/tests/dagster_cron_reference.py > \
        shared/tests/data/dagster_cron_ticks.json

For every case it runs ``dagster._utils.schedules.cron_string_iterator`` (what Dagster's
schedules and time-window partitions tick on) forwards from ``start`` and
``reverse_cron_string_iterator`` backwards from ``end``, and records both; it also records
the keys and windows of a few hourly and daily partition sets. Where the two directions
disagree, or where the public iterator's hourly shortcut is wrong for the zone (it assumes
whole-hour UTC offsets read at the *current* date, so in Australia/Lord_Howe, whose DST
shift is 30 minutes, its hourly ticks drift to :30 after a change), the case says so and
also records Dagster's general croniter path (``_croniter_string_iterator``), whose rule is
the one Tether follows.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import dagster
from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition
from dagster._utils.schedules import (
    _croniter_string_iterator,
    cron_string_iterator,
    reverse_cron_string_iterator,
)

# (zone, cron, window start, window end); the window is read as UTC instants.
CASES: list[tuple[str, str, str, str]] = [
    # New York falls back 2026-11-01 02:00 EDT -> 01:00 EST (01:00-02:00 repeats).
    ("America/New_York", "0 * * * *", "2026-11-01T03:30", "2026-11-02T05:30"),
    ("America/New_York", "*/15 * * * *", "2026-11-01T04:10", "2026-11-01T08:10"),
    ("America/New_York", "30 * * * *", "2026-11-01T03:00", "2026-11-01T09:00"),
    ("America/New_York", "0 0-23 * * *", "2026-11-01T03:30", "2026-11-01T09:30"),
    ("America/New_York", "0 1 * * *", "2026-10-30T12:00", "2026-11-03T12:00"),
    ("America/New_York", "30 1 * * *", "2026-10-30T12:00", "2026-11-03T12:00"),
    ("America/New_York", "0 0-5 * * *", "2026-11-01T03:30", "2026-11-01T12:00"),
    ("America/New_York", "0,30 1 * * *", "2026-10-31T12:00", "2026-11-02T12:00"),
    ("America/New_York", "0 0 * * *", "2026-10-30T12:00", "2026-11-03T12:00"),
    ("America/New_York", "30 1 * * 0", "2026-10-20T12:00", "2026-11-20T12:00"),
    ("America/New_York", "0 1 1 * *", "2026-09-15T12:00", "2027-01-15T12:00"),
    # New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT (02:00-03:00 is skipped).
    ("America/New_York", "30 2 * * *", "2026-03-06T12:00", "2026-03-10T12:00"),
    ("America/New_York", "0 * * * *", "2026-03-08T04:30", "2026-03-08T09:30"),
    ("America/New_York", "30 * * * *", "2026-03-08T04:00", "2026-03-08T09:00"),
    ("America/New_York", "*/15 * * * *", "2026-03-08T06:10", "2026-03-08T07:40"),
    ("America/New_York", "0 2 * * 0", "2026-02-25T12:00", "2026-03-20T12:00"),
    # Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET (02:00-03:00 repeats).
    ("Europe/Berlin", "0 1 * * *", "2026-10-23T12:00", "2026-10-27T12:00"),
    ("Europe/Berlin", "30 2 * * *", "2026-10-23T12:00", "2026-10-27T12:00"),
    ("Europe/Berlin", "0 2 * * *", "2026-10-23T12:00", "2026-10-27T12:00"),
    ("Europe/Berlin", "0 * * * *", "2026-10-24T22:30", "2026-10-25T04:30"),
    ("Europe/Berlin", "*/20 * * * *", "2026-10-24T23:50", "2026-10-25T02:10"),
    # Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST.
    ("Europe/Berlin", "30 2 * * *", "2026-03-27T12:00", "2026-03-31T12:00"),
    ("Europe/Berlin", "0 * * * *", "2026-03-28T23:30", "2026-03-29T03:30"),
    ("Europe/Berlin", "0 9 * * 1", "2026-03-01T12:00", "2026-04-15T12:00"),
    # Sydney falls back 2026-04-05 03:00 AEDT -> 02:00 AEST, springs forward 2026-10-04.
    ("Australia/Sydney", "0 * * * *", "2026-04-04T13:30", "2026-04-04T18:30"),
    ("Australia/Sydney", "30 2 * * *", "2026-04-02T12:00", "2026-04-07T12:00"),
    ("Australia/Sydney", "*/30 * * * *", "2026-04-04T14:10", "2026-04-04T17:40"),
    ("Australia/Sydney", "30 2 * * *", "2026-10-01T12:00", "2026-10-06T12:00"),
    ("Australia/Sydney", "0 * * * *", "2026-10-03T13:30", "2026-10-03T18:30"),
    # Adelaide (+10:30 / +09:30) changes on the same days, by an hour.
    ("Australia/Adelaide", "0 * * * *", "2026-04-04T14:00", "2026-04-04T19:00"),
    ("Australia/Adelaide", "30 2 * * *", "2026-04-02T12:00", "2026-04-07T12:00"),
    ("Australia/Adelaide", "15 2 * * *", "2026-10-01T12:00", "2026-10-06T12:00"),
    ("Australia/Adelaide", "0 * * * *", "2026-10-03T14:00", "2026-10-03T19:00"),
    # Lord Howe (+11 / +10:30): a 30-minute shift; falls back 2026-04-05 02:00 -> 01:30
    # (01:30-02:00 repeats), springs forward 2026-10-04 02:00 -> 02:30.
    ("Australia/Lord_Howe", "*/15 * * * *", "2026-04-04T14:10", "2026-04-04T15:50"),
    ("Australia/Lord_Howe", "0 * * * *", "2026-04-04T12:30", "2026-04-04T18:30"),
    ("Australia/Lord_Howe", "30 * * * *", "2026-04-04T12:30", "2026-04-04T18:30"),
    ("Australia/Lord_Howe", "45 1 * * *", "2026-04-02T12:00", "2026-04-07T12:00"),
    ("Australia/Lord_Howe", "15 2 * * *", "2026-10-01T12:00", "2026-10-06T12:00"),
    ("Australia/Lord_Howe", "*/15 * * * *", "2026-10-03T14:40", "2026-10-03T16:10"),
    # Kolkata (+05:30, no DST).
    ("Asia/Kolkata", "0 * * * *", "2026-11-01T03:10", "2026-11-01T08:10"),
    ("Asia/Kolkata", "30 2 * * *", "2026-10-30T12:00", "2026-11-03T12:00"),
]


def _iso(ticks: list[datetime]) -> list[str]:
    return [t.isoformat() for t in ticks]


def _window(case: tuple[str, str, str, str]) -> dict[str, object]:
    zone, cron, start_s, end_s = case
    start = datetime.fromisoformat(start_s).replace(tzinfo=UTC).timestamp()
    end = datetime.fromisoformat(end_s).replace(tzinfo=UTC).timestamp()
    forward = []
    for tick in cron_string_iterator(start, cron, zone):
        if tick.timestamp() >= end:
            break
        forward.append(tick)
    backward = []
    for tick in reverse_cron_string_iterator(end, cron, zone):
        if tick.timestamp() < start:
            break
        backward.append(tick)
    general = []
    for tick in _croniter_string_iterator(start, cron, zone):
        if tick.timestamp() >= end:
            break
        general.append(tick)
    out: dict[str, object] = {
        "zone": zone,
        "cron": cron,
        "start": start_s + "+00:00",
        "end": end_s + "+00:00",
        "ticks": _iso(forward),
    }
    if _iso(backward[::-1]) != _iso(forward):
        out["reverse_ticks"] = _iso(backward[::-1])
    if _iso(general) != _iso(forward):
        out["croniter_path_ticks"] = _iso(general)
    return out


# (kind, zone, start, end, offsets): Dagster's hourly/daily partitions between two local
# times (start and end in the partitions' key format). Not Lord Howe: Dagster's hourly
# partitions there drift by the 30-minute change, as its hourly ticks do.
PARTITIONS: list[tuple[str, str, str, str, dict[str, int]]] = [
    ("hourly", "America/New_York", "2026-10-31-22:00", "2026-11-01-05:00", {}),
    ("hourly", "America/New_York", "2026-03-07-23:00", "2026-03-08-05:00", {}),
    ("hourly", "Europe/Berlin", "2026-10-25-00:00", "2026-10-25-05:00", {}),
    ("hourly", "Australia/Sydney", "2026-04-05-00:00", "2026-04-05-05:00", {}),
    ("hourly", "Australia/Adelaide", "2026-04-05-00:00", "2026-04-05-05:00", {}),
    ("daily", "America/New_York", "2026-10-30", "2026-11-03", {"hour_offset": 1}),
]


def _partitions(case: tuple[str, str, str, str, dict[str, int]]) -> dict[str, object]:
    kind, zone, start, end, offsets = case
    cls = HourlyPartitionsDefinition if kind == "hourly" else DailyPartitionsDefinition
    parts = cls(start_date=start, end_date=end, timezone=zone, **offsets)  # type: ignore[arg-type]
    keys = parts.get_partition_keys()
    windows = [parts.time_window_for_partition_key(k) for k in keys]
    return {
        "kind": kind,
        "zone": zone,
        "start": start,
        "end": end,
        **offsets,
        "keys": keys,
        "windows": [[w.start.isoformat(), w.end.isoformat()] for w in windows],
    }


def main() -> None:
    """Print the JSON document of every case."""
    doc = {
        "generated_by": f"dagster {dagster.__version__}, shared/tests/dagster_cron_reference.py",
        "cases": [_window(case) for case in CASES],
        "partitions": [_partitions(case) for case in PARTITIONS],
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

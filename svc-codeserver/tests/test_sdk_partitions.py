"""Partitions, cron ticks across DST changes, retry policies and op context events."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from tether.sdk import (
    PARTITION_KEY_TAG,
    PARTITION_SET_TAG,
    AssetMaterialization,
    Backoff,
    DailyPartitionsDefinition,
    DefinitionError,
    HourlyPartitionsDefinition,
    Jitter,
    MonthlyPartitionsDefinition,
    OpContext,
    PartitionKeyError,
    RetryPolicy,
    StaticPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
    job,
    op,
    partitioned_config,
)
from tether.sdk._cron import ticks_after, ticks_before

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(values) -> list[str]:
    return [v.isoformat() for v in values]


# --- cron ticks --------------------------------------------------------------------


def test_daily_tick_in_spring_forward_gap_fires_at_end_of_gap() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29.
    ticks = islice(ticks_after("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12)), 4)
    assert iso(ticks) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_hourly_ticks_skip_the_missing_hour_without_duplicates() -> None:
    ticks = list(islice(ticks_after("0 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 30)), 4))
    assert iso(ticks) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T05:00:00+02:00",
    ]
    # Real instants strictly increase; 01:00 CET -> 03:00 CEST is one real hour.
    assert ticks[1].astimezone(UTC) - ticks[0].astimezone(UTC) == timedelta(hours=1)


def test_repeated_wall_time_fires_once_at_later_occurrence() -> None:
    # Europe/Berlin repeats 02:00-03:00 on 2026-10-25. A cron naming the hour fires once,
    # at the later (CET) occurrence, as Dagster does (this test pinned the first, CEST,
    # occurrence until issue 17; see shared/tests/test_cron_dst.py for Dagster's ticks).
    ticks = list(islice(ticks_after("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12)), 2))
    assert iso(ticks) == ["2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00"]
    # Starting in the first 02:xx hour after 02:30 CEST, the tick is still to come.
    first_pass = datetime(2026, 10, 25, 2, 40, tzinfo=BERLIN)
    assert next(ticks_after("30 2 * * *", "Europe/Berlin", first_pass)).isoformat() == (
        "2026-10-25T02:30:00+01:00"
    )
    # Starting after it in the second 02:xx hour, the next tick is the next day's.
    second_pass = datetime(2026, 10, 25, 2, 40, tzinfo=BERLIN, fold=1)
    assert next(ticks_after("30 2 * * *", "Europe/Berlin", second_pass)).isoformat() == (
        "2026-10-26T02:30:00+01:00"
    )


def test_daily_ticks_stay_at_local_time_across_dst_in_new_york() -> None:
    ticks = list(islice(ticks_after("0 9 * * *", "America/New_York", utc(2026, 3, 7, 0)), 3))
    assert [t.astimezone(UTC).hour for t in ticks] == [14, 13, 13]  # EST, then EDT
    assert all(t.astimezone(NEW_YORK).hour == 9 for t in ticks)


def test_ticks_before_include_the_instant_and_go_backwards() -> None:
    at = utc(2026, 1, 10, 6, 0)
    assert iso(islice(ticks_before("0 6 * * *", "UTC", at), 2)) == [
        "2026-01-10T06:00:00+00:00",
        "2026-01-09T06:00:00+00:00",
    ]


def test_invalid_cron_and_zone_are_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="does not identify"):
        DailyPartitionsDefinition(start="2026-01-01", timezone="UTC", fmt="%Y")
    with pytest.raises(DefinitionError, match="time zone"):
        DailyPartitionsDefinition(start="2026-01-01", timezone="Mars/Olympus")
    with pytest.raises(DefinitionError, match="invalid cron"):
        TimeWindowPartitionsDefinition(cron_schedule="61 * * * *", start="2026-01-01", fmt="%Y")


# --- partitions ----------------------------------------------------------------------


def test_static_partitions_keep_order_and_reject_duplicates() -> None:
    regions = StaticPartitionsDefinition(["eu", "us", "apac"])
    assert regions.get_partition_keys() == ["eu", "us", "apac"]
    assert regions.has_partition_key("us") and not regions.has_partition_key("mars")
    with pytest.raises(DefinitionError, match="duplicate"):
        StaticPartitionsDefinition(["a", "a"])
    with pytest.raises(DefinitionError):
        StaticPartitionsDefinition("abc")


def test_daily_partitions_exist_once_their_window_ended() -> None:
    daily = DailyPartitionsDefinition(start=date(2026, 3, 27), timezone="Europe/Berlin")
    now = datetime(2026, 3, 30, 0, 0, tzinfo=BERLIN)  # 03-29 just ended
    assert daily.get_partition_keys(now) == ["2026-03-27", "2026-03-28", "2026-03-29"]
    assert daily.get_partition_keys(now - timedelta(seconds=1)) == ["2026-03-27", "2026-03-28"]
    window = daily.time_window_for_key("2026-03-29")
    # The DST day is 23 hours long.
    assert window.end.astimezone(UTC) - window.start.astimezone(UTC) == timedelta(hours=23)
    assert daily.tags_for_key("2026-03-29") == {
        "tether/partition/start": "2026-03-29T00:00:00+01:00",
        "tether/partition/end": "2026-03-30T00:00:00+02:00",
    }
    assert daily.key_for_time(datetime(2026, 3, 29, 12, tzinfo=BERLIN)) == "2026-03-29"


def test_end_and_end_offset_bound_the_keys() -> None:
    bounded = DailyPartitionsDefinition(start="2026-01-01", end="2026-01-04")
    assert bounded.get_partition_keys(utc(2027, 1, 1)) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    ahead = DailyPartitionsDefinition(start="2026-01-01", end_offset=1)
    assert ahead.get_partition_keys(utc(2026, 1, 2, 12)) == ["2026-01-01", "2026-01-02"]
    behind = DailyPartitionsDefinition(start="2026-01-01", end_offset=-1)
    assert behind.get_partition_keys(utc(2026, 1, 3, 12)) == ["2026-01-01"]
    with pytest.raises(DefinitionError, match="not after start"):
        DailyPartitionsDefinition(start="2026-01-02", end="2026-01-01")


def test_hourly_weekly_monthly_keys_and_offsets() -> None:
    hourly = HourlyPartitionsDefinition(start="2026-10-25T00:00", timezone="Europe/Berlin")
    # The repeated 02:00 hour has two keys, each window one real hour (until issue 17
    # this pinned one key whose window was two hours long).
    assert hourly.get_partition_keys(utc(2026, 10, 25, 2)) == [
        "2026-10-25-00:00",
        "2026-10-25-01:00",
        "2026-10-25-02:00",
        "2026-10-25-02:00+0100",
    ]
    first = hourly.time_window_for_key("2026-10-25-02:00")
    assert first.end.astimezone(UTC) == utc(2026, 10, 25, 1)  # 02:00 CET
    assert hourly.time_window_for_key("2026-10-25-02:00+0100").end == datetime(
        2026, 10, 25, 3, tzinfo=BERLIN
    )
    weekly = WeeklyPartitionsDefinition(start="2026-01-01", day_offset=1)  # Mondays
    assert weekly.get_partition_keys(utc(2026, 1, 20)) == ["2026-01-05", "2026-01-12"]
    monthly = MonthlyPartitionsDefinition(start="2026-01-01", day_offset=15, hour_offset=6)
    assert monthly.get_partition_keys(utc(2026, 3, 16)) == ["2026-01-15", "2026-02-15"]
    with pytest.raises(DefinitionError, match="day_offset"):
        MonthlyPartitionsDefinition(start="2026-01-01", day_offset=31)


def test_unknown_time_window_keys_are_partition_key_errors() -> None:
    daily = DailyPartitionsDefinition(start="2026-01-01")
    for key in ("yesterday", "2025-12-31"):
        with pytest.raises(PartitionKeyError):
            daily.time_window_for_key(key)
    assert not daily.has_partition_key("2030-01-01", utc(2026, 2, 1))
    assert daily.has_partition_key("2026-01-31", utc(2026, 2, 1))
    with pytest.raises(PartitionKeyError):
        daily.check_key("2026-02-01", utc(2026, 2, 1))  # still running


def test_partitioned_job_gives_run_config_and_tags_per_key() -> None:
    daily = DailyPartitionsDefinition(start="2026-01-01", timezone="Europe/Berlin")

    def tags_for(key: str) -> dict[str, str]:
        return {"day": key}

    @partitioned_config(daily, tags_for_partition_fn=tags_for)
    def daily_config(start: datetime, end: datetime) -> dict:
        return {"ops": {"load": {"config": {"since": start.isoformat()}}}}

    @op
    def load() -> None: ...

    @job(config=daily_config)
    def etl():
        load()

    assert etl.partitions_def is daily and etl.partition_set_name == "etl_partition_set"
    run = etl.partition_run("2026-01-05", utc(2026, 2, 1))
    assert run.run_config == {"ops": {"load": {"config": {"since": "2026-01-05T00:00:00+01:00"}}}}
    assert run.tags[PARTITION_KEY_TAG] == "2026-01-05"
    assert run.tags[PARTITION_SET_TAG] == "etl_partition_set"
    assert run.tags["day"] == "2026-01-05"
    assert run.tags["tether/partition/start"] == "2026-01-05T00:00:00+01:00"
    with pytest.raises(PartitionKeyError):
        etl.partition_run("2025-01-01", utc(2026, 2, 1))


def test_static_partitioned_job_without_config_function() -> None:
    @op
    def step() -> None: ...

    @job(partitions_def=StaticPartitionsDefinition(["eu", "us"]))
    def per_region():
        step()

    run = per_region.partition_run("us")
    assert run.run_config == {}
    assert run.tags == {PARTITION_KEY_TAG: "us", PARTITION_SET_TAG: "per_region_partition_set"}

    @job
    def plain():
        step()

    with pytest.raises(DefinitionError, match="not partitioned"):
        plain.partition_run("us")


def test_partitioned_config_signature_must_fit_the_partitions() -> None:
    regions = StaticPartitionsDefinition(["eu"])
    with pytest.raises(DefinitionError, match="time-window"):

        @partitioned_config(regions)
        def two_args(start, end) -> dict:
            return {}

    with pytest.raises(DefinitionError, match="partitions_def differs"):

        @partitioned_config(regions)
        def cfg(key: str) -> dict:
            return {}

        @op
        def o() -> None: ...

        @job(partitions_def=StaticPartitionsDefinition(["us"]), config=cfg)
        def mismatched():
            o()


# --- retry policy --------------------------------------------------------------------


def test_retry_policy_delays() -> None:
    assert RetryPolicy(max_retries=3, delay=2).delay_before(3) == 2
    linear = RetryPolicy(max_retries=3, delay=2, backoff=Backoff.LINEAR)
    assert [linear.delay_before(n) for n in (1, 2, 3)] == [2, 4, 6]
    expo = RetryPolicy(max_retries=3, delay=1, backoff="EXPONENTIAL")
    assert [expo.delay_before(n) for n in (1, 2, 3)] == [1, 2, 4]
    rng = random.Random(7)
    full = RetryPolicy(delay=10, jitter=Jitter.FULL)
    assert all(0 <= full.delay_before(1, rng) <= 10 for _ in range(50))
    with pytest.raises(DefinitionError):
        RetryPolicy(max_retries=-1)


def test_op_and_job_retry_policies() -> None:
    own = RetryPolicy(max_retries=5)
    default = RetryPolicy(max_retries=1, delay=0.5)

    @op(retry_policy=own)
    def flaky() -> int:
        return 1

    @op
    def steady(x: int) -> None: ...

    @job(op_retry_policy=default)
    def j():
        steady(flaky())

    assert j.retry_policy_for("flaky") is own
    assert j.retry_policy_for("steady") is default

    def plain() -> None: ...

    with pytest.raises(DefinitionError, match="RetryPolicy"):
        op(retry_policy=3)(plain)  # type: ignore[arg-type]


# --- op context ----------------------------------------------------------------------


def test_context_events_metadata_and_partition_window() -> None:
    events: list[tuple[str, str, dict]] = []
    daily = DailyPartitionsDefinition(start="2026-01-01")
    context = OpContext(
        run_id="r1",
        op_name="load",
        partition_key="2026-01-02",
        partitions_def=daily,
        event_sink=lambda kind, step, data: events.append((kind, step, data)),
    )
    context.log_event(
        AssetMaterialization("warehouse/orders", metadata={"rows": 3}, partition="2026-01-02")
    )
    assert events == [
        (
            "ASSET_MATERIALIZATION",
            "load",
            {
                "asset_key": ["warehouse", "orders"],
                "description": "",
                "metadata": {"rows": 3},
                "partition": "2026-01-02",
            },
        )
    ]
    context.add_output_metadata({"path": "/tmp/x"})
    assert context.output_metadata == {"path": "/tmp/x"}
    assert context.partition_time_window.start == utc(2026, 1, 2)
    with pytest.raises(DefinitionError, match="JSON"):
        context.add_output_metadata({"when": datetime.now()})
    with pytest.raises(DefinitionError, match="no time-window"):
        _ = OpContext(run_id="r", op_name="x").partition_time_window


@pytest.mark.parametrize("end_offset", [-1, 0, 1, 2])
def test_membership_agrees_with_the_key_list(end_offset: int) -> None:
    # has_partition_key is computed without listing keys: it must agree with the list,
    # at every hour across a DST change.
    daily = DailyPartitionsDefinition(
        start="2026-03-25", end="2026-04-02", timezone="Europe/Berlin", end_offset=end_offset
    )
    candidates = [f"2026-03-{d:02d}" for d in range(23, 32)] + ["2026-04-01", "2026-04-02"]
    # Around both local midnights (23:00 UTC in CET, 22:00 UTC in CEST) and midday.
    moments = [
        utc(2026, 3, 24) + timedelta(days=day, hours=hours)
        for day in range(10)
        for hours in (12, 21.5, 22, 23)
    ]
    for now in moments:
        keys = set(daily.get_partition_keys(now))
        assert {k for k in candidates if daily.has_partition_key(k, now)} == keys, now

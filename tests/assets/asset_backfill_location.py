"""The code location of tests/test_asset_backfill_e2e.py: a daily-partitioned chain of two
assets (``raw_events`` -> ``daily_summary``) over January 2026."""

from tether.sdk import DailyPartitionsDefinition, Definitions, OpContext, asset

DAILY = DailyPartitionsDefinition(start="2026-01-01", end="2026-02-01")


@asset(partitions_def=DAILY, group_name="events")
def raw_events(context: OpContext) -> dict[str, str]:
    """One day of events: names its partition, so the summary can check what it read."""
    return {"day": str(context.partition_key)}


@asset(partitions_def=DAILY, group_name="events")
def daily_summary(context: OpContext, raw_events: dict[str, str]) -> str:
    """Fails unless it read its own day's events."""
    if raw_events["day"] != context.partition_key:
        raise ValueError(f"read {raw_events['day']}'s events for {context.partition_key}")
    return f"summary of {raw_events['day']}"


defs = Definitions(assets=[raw_events, daily_summary])

"""Example code location: module ``example_jobs`` with working directory ``examples/``.

Used by ``tether dev``, the docs and the tests. Location config::

    {"name": "examples", "module": "example_jobs", "working_directory": "examples"}

It shows every SDK feature: ops and jobs (``hello``, ``fails``, ``configured``,
``fan_out_fan_in``), the multiprocess executor (``fan_out_parallel``), a long-running job to
watch or terminate (``countdown``), retries (``flaky``), time-window and static partitions
(``daily_report``, ``regional_sync``), schedules (plain, function-based and partitioned)
a sensor with a cursor and run keys (``greeting_files``), and software-defined assets:
``raw/orders`` and ``raw/customers`` fetched through a ``ConfigurableResource`` (``shop_api``,
its token an ``EnvVar``), ``warehouse/orders`` cleaned from them, a multi-asset computing
``warehouse/customer_totals`` and ``warehouse/top_customers``, and the daily-partitioned
``reports/daily_revenue`` that also depends on the external ``vendor/fx_rates``. Values are
stored by the default filesystem IO manager, or by ``S3IOManager`` when
``TETHER_EXAMPLES_S3_ENDPOINT`` is set (bucket ``TETHER_EXAMPLES_S3_BUCKET``, default
``tether-examples``; credentials from boto3's chain).
"""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from tether.sdk import (
    AssetExecutionContext,
    AssetIn,
    AssetMaterialization,
    AssetOut,
    AssetSpec,
    ConfigurableResource,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Definitions,
    EnvVar,
    OpContext,
    RetryPolicy,
    RunRequest,
    S3IOManager,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    StaticPartitionsDefinition,
    asset,
    build_schedule_from_partitioned_job,
    job,
    multi_asset,
    op,
    partitioned_config,
    schedule,
    sensor,
)

# --- hello: the smallest useful job ---------------------------------------------------


@op
def get_name() -> str:
    """Return who to greet."""
    return "world"


@op(description="Print a greeting and log it.", tags={"kind": "demo"})
def greet(context: OpContext, name: str) -> str:
    greeting = f"hello, {name}!"
    print(greeting)
    context.log.info(f"greeted {name}")
    return greeting


@job(tags={"team": "examples"})
def hello():
    """Two ops: the first returns a value, the second prints it."""
    greet(get_name())


# --- fails: a step failure with output on both streams --------------------------------


@op
def explode() -> None:
    """Print to stdout and stderr, then raise."""
    print("about to fail")
    print("something is wrong", file=sys.stderr)
    raise ValueError("boom: this op always fails")


@op
def after_explode(value: None) -> None:
    """Never runs: its upstream always fails."""
    print("unreachable")


@job
def fails():
    """An op raises ValueError; its downstream op is skipped."""
    after_explode(explode())


# --- configured: an op with a required config field -----------------------------------


class GreetingConfig(BaseModel):
    """Config of ``configured_greeting``."""

    name: str = Field(description="Who to greet.")
    times: int = Field(default=1, ge=1, le=10, description="How many greetings.")
    punctuation: str = "!"


@op
def configured_greeting(context: OpContext, config: GreetingConfig) -> list[str]:
    """Greet ``config.name`` ``config.times`` times."""
    lines = [f"hello, {config.name}{config.punctuation}" for _ in range(config.times)]
    for line in lines:
        print(line)
    context.log.info(f"greeted {config.name} {config.times} time(s)")
    return lines


@job
def configured():
    """Run config: {"ops": {"configured_greeting": {"config": {"name": "..."}}}}."""
    configured_greeting()


# --- fan_out_fan_in: one source, three parallel branches, one join --------------------


@op
def numbers() -> list[int]:
    """The source."""
    return [1, 2, 3, 4]


@op
def total(values: list[int]) -> int:
    return sum(values)


@op
def largest(values: list[int]) -> int:
    return max(values)


@op
def count(values: list[int]) -> int:
    return len(values)


@op
def report(context: OpContext, stats: list[int]) -> dict[str, int]:
    """Join the branches (fan-in: ``stats`` is a list of upstream outputs)."""
    result = dict(zip(["total", "largest", "count", "total_again"], stats, strict=True))
    print(f"stats: {result}")
    context.log.info(f"report: {result}")
    return result


@job(description="Fan-out to three ops (one used twice), fan-in to a report.")
def fan_out_fan_in():
    values = numbers()
    report([total(values), largest(values), count(values), total(values)])


@job(
    executor="multiprocess",
    description="The same graph, each step in its own process (fan-out branches in parallel).",
)
def fan_out_parallel():
    values = numbers()
    report([total(values), largest(values), count(values), total(values)])


# --- flaky: an op that fails on its first attempt and succeeds when retried -----------


@op(retry_policy=RetryPolicy(max_retries=2, delay=0.1, backoff="EXPONENTIAL"))
def sometimes_fails(context: OpContext) -> str:
    """Fail on the first attempt (``context.retry_number == 0``), succeed on the retry."""
    if context.retry_number == 0:
        raise ConnectionError("transient: the first attempt always fails")
    return f"succeeded on retry {context.retry_number}"


@job
def flaky():
    """One op with a RetryPolicy: STEP_FAILURE is not final, STEP_RETRY then STEP_SUCCESS."""
    sometimes_fails()


# --- countdown: a long-running job to watch live and to terminate ----------------------


class CountdownConfig(BaseModel):
    """How long ``tick`` runs."""

    seconds: int = Field(default=60, ge=1, le=3600, description="Seconds to count down.")


@op(description="Print one line a second, then finish.")
def tick(context: OpContext, config: CountdownConfig) -> int:
    for left in range(config.seconds, 0, -1):
        print(f"{left} s left", flush=True)
        time.sleep(1)
    context.log.info("countdown finished")
    return config.seconds


@job
def countdown():
    """One op printing a line a second: see the live log tail, or terminate the run."""
    tick()


# --- daily_report: time-window partitions with a partitioned config -------------------

DAILY = DailyPartitionsDefinition(start="2026-01-01", timezone="Europe/Berlin")


class ReportConfig(BaseModel):
    """Config of ``build_report``: the day it covers."""

    day: str = Field(description="ISO date of the partition.")


@partitioned_config(
    DAILY, tags_for_partition_fn=lambda start, end: {"weekday": start.strftime("%A")}
)
def daily_report_config(start: datetime, end: datetime) -> dict:
    """Each partition's run config: the day its window starts."""
    return {"ops": {"build_report": {"config": {"day": start.date().isoformat()}}}}


@op
def build_report(context: OpContext, config: ReportConfig) -> int:
    """Pretend to aggregate one day, and report the asset it wrote."""
    rows = len(config.day)
    context.log.info(f"report for {config.day} (partition {context.partition_key})")
    context.log_event(
        AssetMaterialization(
            "reports/daily", metadata={"rows": rows}, partition=context.partition_key
        )
    )
    context.add_output_metadata({"rows": rows})
    return rows


@job(config=daily_report_config)
def daily_report():
    """A daily partitioned job (Europe/Berlin days); run config comes from the partition."""
    build_report()


# --- regional_sync: static partitions ------------------------------------------------


@op
def sync_region(context: OpContext) -> str:
    """Sync the region named by the run's partition key."""
    print(f"syncing {context.partition_key}")
    return context.partition_key or "all"


@job(partitions_def=StaticPartitionsDefinition(["eu", "us", "apac"]))
def regional_sync():
    """One partition per region."""
    sync_region()


# --- schedules -----------------------------------------------------------------------

hello_weekday_mornings = ScheduleDefinition(
    name="hello_weekday_mornings",
    cron_schedule="0 9 * * 1-5",
    execution_timezone="Europe/Berlin",
    job=hello,
    tags={"origin": "schedule"},
    description="Greet at 09:00 Berlin time on weekdays (DST-aware).",
    default_status=DefaultScheduleStatus.RUNNING,
)


@schedule(cron_schedule="0 * * * *", job=configured, execution_timezone="America/New_York")
def hourly_greeting(context: ScheduleEvaluationContext):
    """Greet the hour by name, but not at night (a SkipReason instead)."""
    at = context.scheduled_execution_time
    if at.hour < 7:
        return SkipReason(f"{at:%H:%M} is too early to greet")
    return RunRequest(
        run_key=at.isoformat(),
        run_config={"ops": {"configured_greeting": {"config": {"name": f"{at:%H:%M}"}}}},
    )


daily_report_schedule = build_schedule_from_partitioned_job(daily_report)
regional_sync_nightly = build_schedule_from_partitioned_job(
    regional_sync, name="regional_sync_nightly", cron_schedule="30 2 * * *"
)


# --- greeting_files: a sensor with a cursor and run keys ------------------------------

#: Directory the sensor watches; one greeting run per new file (its text is the name).
INBOX_ENV = "TETHER_EXAMPLES_INBOX"


@sensor(job=configured, minimum_interval_seconds=15)
def greeting_files(context: SensorEvaluationContext):
    """Request a ``configured`` run for each new file in $TETHER_EXAMPLES_INBOX.

    The cursor is the last file name handled (files are taken in name order), and each
    request's run key is the file name, so a re-evaluated tick never greets twice.
    """
    inbox = os.environ.get(INBOX_ENV)
    if not inbox or not Path(inbox).is_dir():
        yield SkipReason(f"${INBOX_ENV} is not a directory")
        return
    new = sorted(
        p for p in Path(inbox).iterdir() if p.is_file() and p.name > (context.cursor or "")
    )
    if not new:
        yield SkipReason("no new files")
        return
    for path in new:
        name = path.read_text().strip() or path.stem
        yield RunRequest(
            run_key=path.name,
            run_config={"ops": {"configured_greeting": {"config": {"name": name}}}},
            tags={"file": path.name},
        )
    context.update_cursor(new[-1].name)


# --- assets: raw data -> cleaned -> a multi-asset and a daily-partitioned report ----------

#: The shop API's token, read by the run worker when a run first uses ``shop_api``. The
#: example has no real API: without the variable set, a demo token stands in, so
#: ``tether dev`` works as is (a real resource would leave it unset and fail clearly).
SHOP_TOKEN_VAR = "TETHER_EXAMPLES_SHOP_TOKEN"
os.environ.setdefault(SHOP_TOKEN_VAR, "demo-token")


class ShopApi(ConfigurableResource):
    """A (simulated) shop API: orders and customers, the same for the same day."""

    token: str
    page_size: int = 50

    def fetch_orders(self, day: str) -> list[dict[str, Any]]:
        rng = random.Random(f"orders-{day}")
        return [
            {
                "id": i,
                "customer": rng.randint(1, 12),
                # A few rows are broken on purpose: cleaning drops them.
                "amount": round(rng.uniform(5, 120), 2) if rng.random() > 0.08 else None,
            }
            for i in range(rng.randint(self.page_size // 2, self.page_size))
        ]

    def fetch_customers(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": f"customer-{i:02d}"} for i in range(1, 13)]


@asset(
    key="raw/orders",
    group_name="ingest",
    owners=["team:data-eng"],
    kinds=["python", "api"],
    description="Today's orders as the shop API returns them (some rows are broken).",
)
def raw_orders(context: AssetExecutionContext, shop_api: ShopApi) -> list[dict[str, Any]]:
    rows = shop_api.fetch_orders(datetime.now().strftime("%Y-%m-%d-%H%M"))
    context.log.info(f"fetched {len(rows)} orders")
    context.add_output_metadata({"rows": len(rows)})
    return rows


@asset(key="raw/customers", group_name="ingest", owners=["team:data-eng"], kinds=["python"])
def raw_customers(context: AssetExecutionContext, shop_api: ShopApi) -> list[dict[str, Any]]:
    """The shop's customers."""
    rows = shop_api.fetch_customers()
    context.add_output_metadata({"rows": len(rows)})
    return rows


@asset(
    key="warehouse/orders",
    ins={"orders": AssetIn(key="raw/orders")},
    group_name="warehouse",
    code_version="2",
    owners=["team:analytics"],
    kinds=["python", "table"],
    metadata={"primary_key": "id"},
)
def cleaned_orders(
    context: AssetExecutionContext, orders: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Orders with an amount; the broken rows dropped."""
    cleaned = [row for row in orders if row["amount"] is not None]
    context.add_output_metadata(
        {
            "rows": len(cleaned),
            "dropped": len(orders) - len(cleaned),
            "revenue": round(sum(row["amount"] for row in cleaned), 2),
        }
    )
    return cleaned


@multi_asset(
    outs={
        "customer_totals": AssetOut(
            key_prefix="warehouse", description="Revenue per customer.", kinds=["table"]
        ),
        "top_customers": AssetOut(
            key_prefix="warehouse", description="The three biggest customers by name."
        ),
    },
    ins={"orders": AssetIn(key="warehouse/orders"), "customers": AssetIn(key="raw/customers")},
    group_name="warehouse",
)
def customer_stats(
    orders: list[dict[str, Any]], customers: list[dict[str, Any]]
) -> tuple[dict[str, float], list[str]]:
    """Revenue per customer, and the top three: one function, two assets."""
    names = {c["id"]: c["name"] for c in customers}
    totals: dict[str, float] = {}
    for row in orders:
        name = names.get(row["customer"], f"unknown-{row['customer']}")
        totals[name] = round(totals.get(name, 0.0) + row["amount"], 2)
    top = sorted(totals, key=lambda n: -totals[n])[:3]
    return totals, top


fx_rates = AssetSpec(
    "vendor/fx_rates",
    description="Daily FX rates, loaded by the vendor's own pipeline.",
    group_name="reports",
    owners=["vendor@example.com"],
)


@asset(
    key="reports/daily_revenue",
    ins={"orders": AssetIn(key="warehouse/orders")},
    deps=[fx_rates],
    partitions_def=DailyPartitionsDefinition(start="2026-11-01", timezone="UTC"),
    group_name="reports",
    owners=["team:analytics"],
    kinds=["python", "report"],
)
def daily_revenue(context: AssetExecutionContext, orders: list[dict[str, Any]]) -> dict[str, Any]:
    """One day's revenue report (in EUR; the vendor's FX rates are computed elsewhere)."""
    day = context.partition_key
    revenue = round(sum(row["amount"] for row in orders), 2)
    context.add_output_metadata({"revenue_eur": revenue, "orders": len(orders)})
    return {"day": day, "revenue_eur": revenue}


def example_resources() -> dict[str, Any]:
    """``shop_api``, and the S3 IO manager when an endpoint is configured."""
    resources: dict[str, Any] = {"shop_api": ShopApi(token=EnvVar(SHOP_TOKEN_VAR))}
    endpoint = os.environ.get("TETHER_EXAMPLES_S3_ENDPOINT")
    if endpoint:
        resources["io_manager"] = S3IOManager(
            bucket=os.environ.get("TETHER_EXAMPLES_S3_BUCKET", "tether-examples"),
            prefix="examples",
            endpoint_url=endpoint,
        )
    return resources


defs = Definitions(
    jobs=[
        hello,
        fails,
        configured,
        fan_out_fan_in,
        fan_out_parallel,
        flaky,
        countdown,
        daily_report,
        regional_sync,
    ],
    schedules=[
        hello_weekday_mornings,
        hourly_greeting,
        daily_report_schedule,
        regional_sync_nightly,
    ],
    sensors=[greeting_files],
    assets=[raw_orders, raw_customers, cleaned_orders, customer_stats, daily_revenue, fx_rates],
    resources=example_resources(),
    name="examples",
)

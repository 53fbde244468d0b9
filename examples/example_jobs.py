"""Example code location: module ``example_jobs`` with working directory ``examples/``.

Used by ``tether dev``, the docs and the tests. Location config::

    {"name": "examples", "module": "example_jobs", "working_directory": "examples"}
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, Field
from tether.sdk import Definitions, OpContext, job, op

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


defs = Definitions(jobs=[hello, fails, configured, fan_out_fan_in], name="examples")

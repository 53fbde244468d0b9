"""What a run's tags (or the deployment's defaults) say of its retries and its time bound.

Tags, named as Dagster names them so a Dagster user finds them:

- ``tether/max_retries``: how many times a failed run is retried (a whole number >= 0);
- ``tether/retry_strategy``: ``FROM_FAILURE`` or ``ALL_STEPS``;
- ``tether/retry_on_asset_or_op_failure``: ``false`` to retry only runs that failed for
  infrastructure reasons (:class:`~tether.controlplane.runs.failures.RunFailureReason`);
- ``tether/max_runtime``: seconds a run may stay STARTED before the run monitor fails
  and terminates it.

A run without a tag gets the deployment's default (control plane settings). The tags are
checked when a run is launched (:func:`check_policy_tags`), so a malformed one is refused
there rather than found when the run fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from tether.controlplane.errors import BadInputError
from tether.shared.wire.runs import MAX_RUNTIME_TAG

__all__ = [
    "MAX_RETRIES_TAG",
    "MAX_RUNTIME_TAG",
    "RETRY_ON_ASSET_OR_OP_FAILURE_TAG",
    "RETRY_STRATEGY_TAG",
    "PolicyDefaults",
    "RetryPolicy",
    "RetryStrategy",
    "check_policy_tags",
    "max_runtime_of",
    "retry_policy",
]

MAX_RETRIES_TAG = "tether/max_retries"
RETRY_STRATEGY_TAG = "tether/retry_strategy"
RETRY_ON_ASSET_OR_OP_FAILURE_TAG = "tether/retry_on_asset_or_op_failure"

_BOOLEANS = {"true": True, "false": False}


class RetryStrategy(StrEnum):
    """Which steps a retry runs (the re-execution strategies)."""

    FROM_FAILURE = "FROM_FAILURE"
    ALL_STEPS = "ALL_STEPS"


@dataclass(frozen=True)
class PolicyDefaults:
    """The deployment's defaults, for runs without the tags."""

    max_retries: int = 0
    retry_strategy: RetryStrategy = RetryStrategy.FROM_FAILURE
    retry_on_asset_or_op_failure: bool = True
    max_runtime_s: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed run is retried."""

    max_retries: int
    strategy: RetryStrategy
    retry_on_asset_or_op_failure: bool


def _max_retries(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise BadInputError(f"tag {MAX_RETRIES_TAG} must be a whole number >= 0, not {value!r}")
    return number


def _strategy(value: str) -> RetryStrategy:
    try:
        return RetryStrategy(value.upper())
    except ValueError:
        choices = " or ".join(RetryStrategy)
        raise BadInputError(f"tag {RETRY_STRATEGY_TAG} must be {choices}, not {value!r}") from None


def _boolean(value: str) -> bool:
    found = _BOOLEANS.get(value.strip().lower())
    if found is None:
        raise BadInputError(
            f"tag {RETRY_ON_ASSET_OR_OP_FAILURE_TAG} must be true or false, not {value!r}"
        )
    return found


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadInputError(f"tag {MAX_RUNTIME_TAG} must be a number of seconds > 0, not {value!r}")
    return seconds


def retry_policy(tags: Mapping[str, str], defaults: PolicyDefaults) -> RetryPolicy:
    """The retry policy of a run with ``tags``.

    Raises:
        BadInputError: a retry tag is malformed.
    """
    max_retries = tags.get(MAX_RETRIES_TAG)
    strategy = tags.get(RETRY_STRATEGY_TAG)
    on_failure = tags.get(RETRY_ON_ASSET_OR_OP_FAILURE_TAG)
    return RetryPolicy(
        max_retries=defaults.max_retries if max_retries is None else _max_retries(max_retries),
        strategy=defaults.retry_strategy if strategy is None else _strategy(strategy),
        retry_on_asset_or_op_failure=(
            defaults.retry_on_asset_or_op_failure if on_failure is None else _boolean(on_failure)
        ),
    )


def max_runtime_of(tags: Mapping[str, str], default: float | None) -> float | None:
    """Seconds a run with ``tags`` may stay STARTED (None: unbounded).

    Raises:
        BadInputError: the tag is malformed.
    """
    value = tags.get(MAX_RUNTIME_TAG)
    return default if value is None else _seconds(value)


def check_policy_tags(tags: Mapping[str, str]) -> None:
    """Refuse malformed retry or runtime tags.

    Raises:
        BadInputError: naming the tag and what it must be.
    """
    retry_policy(tags, PolicyDefaults())
    max_runtime_of(tags, None)

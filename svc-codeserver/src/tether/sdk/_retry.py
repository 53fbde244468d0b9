"""``RetryPolicy``: how often, and after how long, a failed op is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from tether.sdk._errors import DefinitionError


class Backoff(StrEnum):
    """How the delay grows between attempts."""

    LINEAR = "LINEAR"  # delay * attempt
    EXPONENTIAL = "EXPONENTIAL"  # delay * 2 ** (attempt - 1)


class Jitter(StrEnum):
    """Randomness added to the delay, so retries of many runs do not align."""

    FULL = "FULL"  # uniform in [0, delay]
    PLUS_MINUS = "PLUS_MINUS"  # delay +/- up to delay/2


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failed op up to ``max_retries`` times.

    Args:
        max_retries: retries after the first attempt (0 = no retry).
        delay: seconds to wait before the first retry.
        backoff: how the delay grows; None keeps it constant.
        jitter: randomness added to each delay; None adds none.
    """

    max_retries: int = 1
    delay: float = 0.0
    backoff: Backoff | None = None
    jitter: Jitter | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise DefinitionError(
                f"RetryPolicy.max_retries must be an int >= 0, got {self.max_retries!r}"
            )
        if not isinstance(self.delay, int | float) or self.delay < 0:
            raise DefinitionError(f"RetryPolicy.delay must be seconds >= 0, got {self.delay!r}")
        if self.backoff is not None:
            object.__setattr__(self, "backoff", Backoff(self.backoff))
        if self.jitter is not None:
            object.__setattr__(self, "jitter", Jitter(self.jitter))

    def delay_before(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        base = float(self.delay)
        if self.backoff is Backoff.LINEAR:
            base *= retry
        elif self.backoff is Backoff.EXPONENTIAL:
            base *= 2 ** (retry - 1)
        rng = rng or random.Random()
        if self.jitter is Jitter.FULL:
            return rng.uniform(0, base)
        if self.jitter is Jitter.PLUS_MINUS:
            return max(0.0, base + rng.uniform(-base / 2, base / 2))
        return base


class RetryRequested(Exception):  # noqa: N818 - named like Dagster's, raised on purpose
    """Raise inside an op to ask for a retry even without a RetryPolicy.

    Args:
        max_retries: retries allowed for this op in total.
        seconds_to_wait: delay before the retry.
    """

    def __init__(self, max_retries: int = 1, seconds_to_wait: float = 0.0) -> None:
        super().__init__(f"retry requested (max_retries={max_retries}, wait={seconds_to_wait}s)")
        self.max_retries = max_retries
        self.seconds_to_wait = seconds_to_wait

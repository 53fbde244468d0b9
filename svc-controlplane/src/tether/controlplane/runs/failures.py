"""Why a run failed: one typed reason per failure path, recorded with the status move.

The control plane learns that a run failed in one of a few ways, and each is its own
:class:`RunFailureReason`, stored on the run (``runs.failure_reason``) and in the data of
its RUN_FAILURE event (``failure_reason``, ``infrastructure``):

- the run worker's own RUN_FAILURE event: ``STEP_FAILURE`` when a step (op, asset)
  failed, else ``RUN_EXCEPTION`` (the run failed outside any step: code that would not
  load, an engine error in the worker);
- the launcher could not launch the worker: ``LAUNCH_FAILED``;
- the launcher reported the worker exited with a non-zero code before the run finished
  (killed, out of memory, crashed): ``WORKER_EXITED``;
- the worker vanished (a health check found it gone, or it exited without its terminal
  event arriving within the grace period): ``WORKER_LOST``;
- the worker never reported RUN_START within the start timeout: ``START_TIMEOUT``;
- the run overran its ``tether/max_runtime`` and was terminated: ``RUN_TIMEOUT``.

The first two worker reasons and ``RUN_TIMEOUT`` are the job's own doing; the others are
infrastructure failures (:attr:`RunFailureReason.is_infrastructure`), which a retry policy
with ``tether/retry_on_asset_or_op_failure=false`` still retries (Dagster's rule).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FAILURE_REASON_KEY", "INFRASTRUCTURE_KEY", "RunFailureReason"]

#: Key of the failure reason in a RUN_FAILURE event's data.
FAILURE_REASON_KEY = "failure_reason"
#: Key of whether it was an infrastructure failure in a RUN_FAILURE event's data.
INFRASTRUCTURE_KEY = "infrastructure"


class RunFailureReason(StrEnum):
    """Why a run ended FAILURE."""

    STEP_FAILURE = "STEP_FAILURE"
    RUN_EXCEPTION = "RUN_EXCEPTION"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    WORKER_EXITED = "WORKER_EXITED"
    WORKER_LOST = "WORKER_LOST"
    START_TIMEOUT = "START_TIMEOUT"
    RUN_TIMEOUT = "RUN_TIMEOUT"

    @property
    def is_infrastructure(self) -> bool:
        """Whether the run failed for a reason outside the job's code (its worker or
        launch), not because a step failed or the job misbehaved."""
        return self in _INFRASTRUCTURE

    def event_data(self) -> dict[str, object]:
        """What a RUN_FAILURE event says of this reason."""
        return {FAILURE_REASON_KEY: str(self), INFRASTRUCTURE_KEY: self.is_infrastructure}


_INFRASTRUCTURE = frozenset(
    {
        RunFailureReason.LAUNCH_FAILED,
        RunFailureReason.WORKER_EXITED,
        RunFailureReason.WORKER_LOST,
        RunFailureReason.START_TIMEOUT,
    }
)

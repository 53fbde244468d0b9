"""Run retries: a failed run is re-executed as a new run, as its retry policy says.

Every move of a run to FAILURE adds a ``pending_retries`` row, in the same transaction
(:func:`tether.controlplane.store.runs.advance_status`). :func:`retry_failed_runs` (the
run retrier daemon's check) takes each pending run in a transaction of its own: it
deletes the row (the delete's row count says which of several control planes decides),
decides, and in that same transaction queues the retry and records the decision on the
failed run. A control plane killed between the failure and the decision leaves the row,
and the next check after restart decides it: each failed run is retried at most once,
and a failure whose retry was not yet created still gets it.

The decision (the policy of :mod:`tether.controlplane.runs.policies`; Dagster's run
retries are the model):

- no retries configured (``tether/max_retries`` and the deployment default 0): nothing;
- the run was attempt ``tether/retry_number`` >= max retries: not retried, recorded;
- ``tether/retry_on_asset_or_op_failure=false`` and the run did not fail for an
  infrastructure reason (:class:`~tether.controlplane.runs.failures.RunFailureReason`):
  not retried, recorded;
- else a re-execution (:func:`tether.controlplane.runs.reexecute.reexecute_in`) with the
  policy's strategy and ``tether/retry_number`` one more than the failed run's; FROM_FAILURE
  whose failed run had every step succeed (its worker died after the last one) falls back
  to ALL_STEPS. The failed run gets a LOG event naming its retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Run
from tether.controlplane.errors import BadInputError
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs import launch
from tether.controlplane.runs.failures import RunFailureReason
from tether.controlplane.runs.policies import (
    RETRY_ON_ASSET_OR_OP_FAILURE_TAG,
    PolicyDefaults,
    RetryStrategy,
    retry_policy,
)
from tether.controlplane.runs.reexecute import (
    RETRY_NUMBER_TAG,
    ReexecutionNotAllowed,
    ReexecutionStrategy,
    reexecute_in,
)
from tether.controlplane.store import retries, runs
from tether.shared.wire.runs import EventType, RunStatus

__all__ = ["RetryDecision", "retry_failed_runs", "retry_number_of"]

log = logging.getLogger(__name__)

#: Most pending runs decided per check (the rest wait for the next one).
BATCH = 100


@dataclass(frozen=True)
class RetryDecision:
    """What became of a failed run: its retry (``retry_run_id``), or why it has none."""

    run_id: str
    retry_run_id: str | None
    message: str


def retry_number_of(run: Run) -> int:
    """The attempt number of ``run``: 0 for a first run, n for its n-th retry."""
    value = (run.tags or {}).get(RETRY_NUMBER_TAG, "0")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


async def retry_failed_runs(
    db: Database, queue: WorkQueue, defaults: PolicyDefaults, *, now: float
) -> list[RetryDecision]:
    """Decide the retry of every failed run whose retry is pending; return the decisions
    taken by this call (not those another control plane took)."""
    async with db.reading() as session:
        pending = list(await retries.pending_retries(session, BATCH))
    decisions: list[RetryDecision] = []
    for run_id in pending:
        async with db.transaction() as session:
            decision = await _decide(session, queue, run_id, defaults, now)
        if decision is not None:
            decisions.append(decision)
            log.info("run %s: %s", run_id, decision.message)
    return decisions


async def _decide(
    session: AsyncSession, queue: WorkQueue, run_id: str, defaults: PolicyDefaults, now: float
) -> RetryDecision | None:
    if not await retries.claim_retry(session, run_id):
        return None  # another control plane decided it
    run = await session.get(Run, run_id)
    if run is None or run.status != RunStatus.FAILURE:
        return None
    try:
        policy = retry_policy(run.tags or {}, defaults)
    except BadInputError as err:
        return _not_retried(session, run, f"not retried: {err}", now)
    if policy.max_retries == 0:
        return RetryDecision(run_id, None, "no retries configured")
    attempt = retry_number_of(run)
    if attempt >= policy.max_retries:
        return _not_retried(
            session,
            run,
            f"not retried: it was retry {attempt} of at most {policy.max_retries}",
            now,
        )
    reason = _reason(run)
    if not policy.retry_on_asset_or_op_failure and not (reason and reason.is_infrastructure):
        return _not_retried(
            session,
            run,
            f"not retried: it failed for a reason of its own ({reason or 'unknown'}), not of "
            f"its infrastructure, and {RETRY_ON_ASSET_OR_OP_FAILURE_TAG} is false",
            now,
        )
    extra = {RETRY_NUMBER_TAG: str(attempt + 1)}
    strategy = ReexecutionStrategy(str(policy.strategy))
    try:
        outcome = await reexecute_in(
            session, queue, run, strategy, traceparent=run.traceparent, extra_tags=extra
        )
        if (
            isinstance(outcome, ReexecutionNotAllowed)
            and strategy is ReexecutionStrategy.FROM_FAILURE
        ):
            # Every step succeeded (the worker died after its last one): run them all again.
            strategy = ReexecutionStrategy.ALL_STEPS
            outcome = await reexecute_in(
                session, queue, run, strategy, traceparent=run.traceparent, extra_tags=extra
            )
    except BadInputError as err:  # the parent's tags no longer fit its job
        return _not_retried(session, run, f"not retried: {err}", now)
    if not isinstance(outcome, launch.Launched):
        return _not_retried(session, run, f"not retried: {outcome.message}", now)
    retry = outcome.run
    message = (
        f"retried as run {retry.id} (retry {attempt + 1} of at most {policy.max_retries}, "
        f"{strategy})"
    )
    data = {
        "retry_run_id": retry.id,
        "retry_number": attempt + 1,
        "max_retries": policy.max_retries,
        "strategy": str(RetryStrategy(str(strategy))),
    }
    runs.add_control_event(
        session, run.id, EventType.LOG, message=message, timestamp=now, data=data
    )
    return RetryDecision(run.id, retry.id, message)


def _reason(run: Run) -> RunFailureReason | None:
    try:
        return RunFailureReason(run.failure_reason) if run.failure_reason else None
    except ValueError:
        return None


def _not_retried(session: AsyncSession, run: Run, message: str, now: float) -> RetryDecision:
    runs.add_control_event(session, run.id, EventType.LOG, message=message, timestamp=now)
    return RetryDecision(run.id, None, message)

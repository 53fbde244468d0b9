"""Re-executing a run: all of its steps again, or only from failure (Dagster's two strategies).

A re-execution is a new run of the same job, config and tags, tagged with its parent
(``tether/parent_run_id``, also the ``parent_run_id`` column) and the first run of its
chain (``tether/root_run_id``). From failure, it also carries the steps it executes
(``tether/step_selection``): those of the parent that did not succeed (failed, skipped,
never started, interrupted) and everything downstream of them. The run worker executes
only those and reads the other steps' outputs from the parent run's storage in the
customer's environment; the control plane never sees them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Run
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs import launch
from tether.controlplane.runs.terminate import RunNotFound
from tether.controlplane.store import locations, runs
from tether.shared.runtime import telemetry
from tether.shared.wire.runs import RunStatus
from tether.shared.wire.snapshots import JobSnapshot

__all__ = [
    "RETRY_NUMBER_TAG",
    "ReexecuteOutcome",
    "ReexecutionNotAllowed",
    "ReexecutionStrategy",
    "reexecute_in",
    "reexecute_run",
    "steps_from_failure",
]

#: Tag of an automatic retry: its attempt number (1 for the first retry of a root run).
RETRY_NUMBER_TAG = "tether/retry_number"
#: Tags a re-execution does not inherit from its parent (it gets its own).
_LINEAGE_TAGS = (
    launch.PARENT_RUN_TAG,
    launch.ROOT_RUN_TAG,
    launch.STEP_SELECTION_TAG,
    RETRY_NUMBER_TAG,
)


class ReexecutionStrategy(StrEnum):
    """Which steps a re-execution runs."""

    ALL_STEPS = "ALL_STEPS"
    FROM_FAILURE = "FROM_FAILURE"


@dataclass(frozen=True)
class ReexecutionNotAllowed:
    """The run cannot be re-executed this way (still going, or nothing failed)."""

    message: str


ReexecuteOutcome = launch.LaunchOutcome | RunNotFound | ReexecutionNotAllowed


def steps_from_failure(
    job: JobSnapshot, succeeded: Collection[str], parent_selection: Collection[str] | None
) -> list[str]:
    """The steps a re-execution from failure runs, in the job's order.

    Args:
        job: the job's current structure (ops in topological order, edges).
        succeeded: steps with a STEP_SUCCESS event in the parent run.
        parent_selection: the parent's own step selection, if it was a re-execution from
            failure itself: the steps outside it succeeded in an earlier run, and the
            parent holds their outputs (the worker linked them into its storage).

    Returns:
        Every step that did not succeed (failed, skipped, never started) and every step
        downstream of one; empty when nothing is left to run.
    """
    names = [op.name for op in job.ops]
    done = set(succeeded)
    if parent_selection is not None:
        done |= set(names) - set(parent_selection)
    rerun = {name for name in names if name not in done}
    children: dict[str, set[str]] = {}
    for edge in job.edges:
        children.setdefault(edge.from_op, set()).add(edge.to_op)
    stack = list(rerun)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in rerun:
                rerun.add(child)
                stack.append(child)
    return [name for name in names if name in rerun]


async def reexecute_run(
    db: Database,
    queue: WorkQueue,
    *,
    deployment_id: str,
    run_id: str,
    strategy: ReexecutionStrategy = ReexecutionStrategy.ALL_STEPS,
    headers: Mapping[str, str] | None = None,
) -> ReexecuteOutcome:
    """Queue a re-execution of run ``run_id``, in one transaction.

    The new run goes through :func:`tether.controlplane.runs.launch.queue_run` like any other
    (the location must be loaded, the job must exist, the parent's config must still
    match the job's schema), inside a ``reexecuteRun`` span.

    Args:
        db: the metadata DB.
        queue: the work queue.
        deployment_id: the caller's deployment.
        run_id: the run to re-execute; it must have ended.
        strategy: ALL_STEPS, or FROM_FAILURE (only for a run that failed or was canceled).
        headers: incoming HTTP headers (a caller's ``traceparent`` becomes the parent span).
    """
    tracer = telemetry.tracer("tether.controlplane")
    with tracer.start_as_current_span(
        "reexecuteRun",
        context=telemetry.context_from_headers(headers),
        attributes={"parent_run_id": run_id, "strategy": str(strategy)},
    ) as span:
        traceparent = telemetry.current_traceparent()
        async with db.transaction() as session:
            parent = await runs.get_run(session, deployment_id, run_id)
            if parent is None:
                return RunNotFound(f"no run {run_id!r} in this deployment")
            outcome = await reexecute_in(session, queue, parent, strategy, traceparent=traceparent)
            if isinstance(outcome, launch.Launched):
                span.set_attribute("run_id", outcome.run.id)
        return outcome


async def reexecute_in(
    session: AsyncSession,
    queue: WorkQueue,
    parent: Run,
    strategy: ReexecutionStrategy,
    *,
    traceparent: str | None,
    extra_tags: Mapping[str, str] | None = None,
) -> ReexecuteOutcome:
    """Queue a re-execution of ``parent`` in ``session``'s transaction (the run retrier's
    way in, and :func:`reexecute_run`'s).

    Args:
        session: the caller's transaction.
        queue: the work queue.
        parent: the run to re-execute; it must have ended.
        strategy: ALL_STEPS, or FROM_FAILURE (only for a run that failed or was canceled).
        traceparent: what the new run's records carry.
        extra_tags: tags the new run gets besides its parent's (a retry's attempt number).
    """
    run_id = parent.id
    status = RunStatus(parent.status)
    if not status.is_terminal:
        return ReexecutionNotAllowed(
            f"run {run_id} is still going ({status}): wait for it to end, or "
            "terminate it, before re-executing it"
        )
    parent_tags = dict(parent.tags or {})
    tags = {k: v for k, v in parent_tags.items() if k not in _LINEAGE_TAGS}
    tags.update(extra_tags or {})
    tags[launch.PARENT_RUN_TAG] = parent.id
    tags[launch.ROOT_RUN_TAG] = parent_tags.get(launch.ROOT_RUN_TAG) or parent.id
    if strategy is ReexecutionStrategy.FROM_FAILURE:
        if status is RunStatus.SUCCESS:
            return ReexecutionNotAllowed(
                f"run {run_id} succeeded: there is no failure to re-execute from "
                "(re-execute all steps instead)"
            )
        location = await locations.get_location(session, parent.deployment_id, parent.location_name)
        snapshot = await locations.load_snapshot(session, location) if location else None
        found = (
            snapshot.locate_job(parent.job_name, parent.repository_name)
            if snapshot is not None
            else None
        )
        if found is not None:
            steps = steps_from_failure(
                found[1],
                await runs.succeeded_steps(session, parent.id),
                launch.step_selection_of(parent_tags),
            )
            if not steps:
                return ReexecutionNotAllowed(
                    f"every step of run {run_id} succeeded: there is nothing to "
                    "re-execute from failure (re-execute all steps instead)"
                )
            tags[launch.STEP_SELECTION_TAG] = ",".join(steps)
        # else: queue_run reports the missing location or job.
    return await launch.queue_run(
        session,
        queue,
        deployment_id=parent.deployment_id,
        location_name=parent.location_name,
        job_name=parent.job_name,
        repository_name=parent.repository_name,
        run_config=dict(parent.run_config or {}),
        tags=tags,
        traceparent=traceparent,
        partition_key=parent.partition_key,
    )

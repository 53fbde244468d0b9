"""Step selection of a run: which nodes execute, and the parent outputs the others leave.

A re-execution from failure runs only its selected steps. Every output a selected step
reads from an unselected one must come from the parent run's storage; the worker links
them into the new run's storage before any step starts, so a missing one fails the run at
once, naming the step and the output, instead of failing a step halfway through. An asset
step reads an unselected upstream asset through its IO manager instead (its value is
where the IO manager stored it): that output is not needed from the parent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tether.codeserver.worker.assetio import loaded_through_io_manager
from tether.codeserver.worker.outputs import MissingParentOutput, StepOutputStorage
from tether.sdk import RESULT, JobDefinition
from tether.shared.nats.subjects import token
from tether.shared.wire.errors import ContractError

__all__ = ["SelectionError", "StepPlan", "plan_steps"]


class SelectionError(Exception):
    """The step selection cannot be executed (unknown steps, or parent outputs missing).

    Attributes:
        missing: (step, output) pairs the parent run did not store.
    """

    def __init__(self, message: str, missing: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.missing = list(missing)


@dataclass(frozen=True)
class StepPlan:
    """What a run executes.

    Attributes:
        selected: the nodes that run, in the job's (topological) order.
        reused: unselected nodes whose parent outputs this run now holds.
    """

    selected: list[str]
    reused: list[str] = field(default_factory=list)

    def is_selected(self, step_key: str) -> bool:
        """Whether ``step_key`` executes in this run."""
        return step_key in self.selected


def plan_steps(
    job: JobDefinition,
    step_selection: Sequence[str] | None,
    parent_run_id: str | None,
    storage: StepOutputStorage,
) -> StepPlan:
    """Check the selection and take over the parent outputs the unselected steps leave.

    Every stored output of an unselected step is linked into this run's storage (not
    only those a selected step reads), so a later re-execution of this run finds them
    here, one level up, whatever it selects.

    Raises:
        SelectionError: a selected step is not in the job, the selection is empty, or an
            output a selected step reads is not stored for the parent run.
    """
    names = [n.name for n in job.nodes]
    if step_selection is None:
        return StepPlan(selected=names)
    if parent_run_id is not None:
        try:
            # It becomes a directory name: nothing may lead outside the storage directory.
            token(parent_run_id)
        except ContractError:
            raise SelectionError(f"parent run id {parent_run_id!r} is not a run id") from None
    unknown = sorted(set(step_selection) - set(names))
    if unknown:
        raise SelectionError(
            f"step selection names steps job {job.name!r} does not have: {', '.join(unknown)}"
        )
    chosen = set(step_selection)
    if not chosen:
        raise SelectionError("the step selection is empty: nothing to execute")
    needed: set[str] = set()
    for node in job.nodes:
        if node.name in chosen:
            # An asset step reads an unselected upstream asset through its IO manager.
            through_io = loaded_through_io_manager(job, node, chosen)
            for param, source in node.inputs.items():
                if param not in through_io:
                    handles = source if isinstance(source, tuple) else (source,)
                    needed.update(h.node for h in handles)
    needed -= chosen
    missing: list[tuple[str, str]] = []
    problems: list[str] = []
    reused: list[str] = []
    for name in names:
        if name in chosen:
            continue
        if parent_run_id is None:
            if name in needed:
                missing.append((name, RESULT))
                problems.append(
                    f"output {RESULT!r} of step {name!r} is read by a selected step, but the "
                    "run has no parent run to take it from"
                )
            continue
        try:
            storage.reuse(parent_run_id, name, RESULT)
        except MissingParentOutput as err:
            if name in needed:
                missing.append((err.step_key, err.output))
                problems.append(str(err))
            continue
        reused.append(name)
    if missing:
        raise SelectionError("Cannot re-execute: " + "; ".join(problems), missing)
    return StepPlan(selected=[n for n in names if n in chosen], reused=reused)

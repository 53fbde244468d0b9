"""Reading ECS task descriptions: is the worker alive, how did it end, and why.

Pure functions over ``DescribeTasks`` / ``RunTask`` response shapes (no AWS calls).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Exit code reported for a task whose container never ran (image pull failure, no
#: capacity, stopped while pending) or that ECS no longer knows.
NO_EXIT_CODE = -1

_ENDED = frozenset({"STOPPED", "DELETED"})


@dataclass(frozen=True)
class TaskState:
    """What a run's task is doing.

    Attributes:
        last_status: ECS's ``lastStatus`` (PROVISIONING, PENDING, ..., RUNNING, ..., STOPPED).
        alive: the task has not stopped (it may be starting, running or stopping).
        exit_code: once stopped: the container's exit code, or :data:`NO_EXIT_CODE` when
            it never ran; None while the task has not stopped.
        reason: why it stopped (stop code, stopped reason, the container's reason).
    """

    last_status: str
    alive: bool
    exit_code: int | None
    reason: str


def task_state(task: Mapping[str, Any], container_name: str) -> TaskState:
    """Map one ``DescribeTasks`` entry to a :class:`TaskState`."""
    last = str(task.get("lastStatus", ""))
    container: Mapping[str, Any] = next(
        (c for c in task.get("containers", []) if c.get("name") == container_name), {}
    )
    reasons = [
        str(part)
        for part in (task.get("stopCode"), task.get("stoppedReason"), container.get("reason"))
        if part
    ]
    if last not in _ENDED:
        return TaskState(last, alive=True, exit_code=None, reason="; ".join(reasons))
    code = container.get("exitCode")
    return TaskState(
        last,
        alive=False,
        exit_code=int(code) if code is not None else NO_EXIT_CODE,
        reason="; ".join(reasons),
    )


def failures_message(failures: Sequence[Mapping[str, Any]]) -> str:
    """The ``failures`` of a RunTask/DescribeTasks response as one line each."""
    lines = []
    for failure in failures:
        text = str(failure.get("reason") or "unknown reason")
        if failure.get("detail"):
            text += f" ({failure['detail']})"
        if failure.get("arn"):
            text = f"{failure['arn']}: {text}"
        lines.append(text)
    return "; ".join(lines) or "no reason given"


def is_healthy_service_task(
    task: Mapping[str, Any], service_name: str, container_name: str
) -> bool:
    """Whether ``task`` is a running task of the service whose container passes its check."""
    if task.get("group") != f"service:{service_name}" or task.get("lastStatus") != "RUNNING":
        return False
    return any(
        c.get("name") == container_name and c.get("healthStatus") == "HEALTHY"
        for c in task.get("containers", [])
    )

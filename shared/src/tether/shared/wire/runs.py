"""Runs as the wire sees them: statuses, event types and the structured run event."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field
from tether.shared.wire.base import ErrorInfo, WireModel


class RunStatus(StrEnum):
    """Lifecycle of a run."""

    QUEUED = "QUEUED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        """Whether no further transition can happen."""
        return self in (RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED)


class EventType(StrEnum):
    """Types of structured run events."""

    RUN_ENQUEUED = "RUN_ENQUEUED"
    RUN_STARTING = "RUN_STARTING"
    RUN_START = "RUN_START"
    STEP_START = "STEP_START"
    STEP_OUTPUT = "STEP_OUTPUT"
    STEP_SUCCESS = "STEP_SUCCESS"
    STEP_FAILURE = "STEP_FAILURE"
    STEP_RETRY = "STEP_RETRY"
    STEP_SKIPPED = "STEP_SKIPPED"
    LOG = "LOG"
    ASSET_MATERIALIZATION = "ASSET_MATERIALIZATION"
    RUN_SUCCESS = "RUN_SUCCESS"
    RUN_FAILURE = "RUN_FAILURE"
    RUN_CANCELING = "RUN_CANCELING"
    RUN_CANCELED = "RUN_CANCELED"
    ENGINE_ERROR = "ENGINE_ERROR"


#: The run status an event moves its run to, if any.
STATUS_FOR_EVENT: dict[EventType, RunStatus] = {
    EventType.RUN_ENQUEUED: RunStatus.QUEUED,
    EventType.RUN_STARTING: RunStatus.STARTING,
    EventType.RUN_START: RunStatus.STARTED,
    EventType.RUN_SUCCESS: RunStatus.SUCCESS,
    EventType.RUN_FAILURE: RunStatus.FAILURE,
    EventType.RUN_CANCELING: RunStatus.CANCELING,
    EventType.RUN_CANCELED: RunStatus.CANCELED,
}


class RunEvent(WireModel):
    """A structured event of one run; ``(run_id, seq)`` is its natural key."""

    type: Literal["tether.v1.run_event"] = "tether.v1.run_event"
    run_id: str
    seq: int = Field(ge=1, description="Per-run sequence number assigned by the run worker.")
    event_type: EventType
    timestamp: float = Field(default_factory=time.time)
    step_key: str | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    traceparent: str | None = None

"""Runs as the wire sees them: statuses, event types and the structured run event."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
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


#: Run tag naming the assets a run of an asset job materializes, when not all of the job's:
#: their keys' user strings (``raw/orders``), comma-separated. Set by the control plane's
#: ``materializeAssets``, read by the run worker (``tether.sdk.select_assets``).
ASSET_SELECTION_TAG = "tether/asset_selection"

#: Run tag bounding how long a run may stay STARTED (seconds > 0): the control plane's run
#: monitor fails and terminates a run past it; the kubernetes substrate also gives the
#: run's Job an ``activeDeadlineSeconds`` from it, so the cluster stops the run even when
#: the control plane cannot reach the agent.
MAX_RUNTIME_TAG = "tether/max_runtime"

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


#: The events that end a run's stream: the run worker publishes nothing after one of them.
TERMINAL_EVENT_TYPES: frozenset[EventType] = frozenset(
    {EventType.RUN_SUCCESS, EventType.RUN_FAILURE, EventType.RUN_CANCELED}
)

#: Most seqs one :class:`LostRunEvents` report may name.
MAX_LOST_SEQS = 10_000


class RunEvent(WireModel):
    """A structured event of one run; ``(run_id, seq)`` is its natural key.

    The run's terminal event (:data:`TERMINAL_EVENT_TYPES`) carries ``last_seq``, the
    run's last seq (its own: nothing is published after it), so the control plane knows
    when it has every event of the run (seqs ``1..last_seq``) and how many are missing.
    """

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
    last_seq: int | None = Field(
        default=None,
        ge=1,
        description="On the run's terminal event only: the run's last seq (the event's own).",
    )

    @model_validator(mode="after")
    def _last_seq_ends_the_stream(self) -> RunEvent:
        if self.last_seq is not None:
            if self.event_type not in TERMINAL_EVENT_TYPES:
                raise ValueError(
                    f"last_seq is carried by terminal events only, not {self.event_type}"
                )
            if self.last_seq < self.seq:
                raise ValueError(f"last_seq {self.last_seq} is below the event's seq {self.seq}")
        return self

    @property
    def stream_end(self) -> int | None:
        """The run's last seq if this event ends its stream (None otherwise).

        A terminal event without ``last_seq`` (a worker older than the field) was still
        published last, so its own seq ends the stream.
        """
        if self.event_type not in TERMINAL_EVENT_TYPES:
            return None
        return self.last_seq if self.last_seq is not None else self.seq


class LostRunEvents(WireModel):
    """An agent's report that some events of a run will never reach the control plane.

    The eventrelay sends one when it dead-letters a run event it cannot upload (malformed,
    or refused by the control plane), so the run's page says which seqs are lost instead
    of waiting for them for ever. Idempotent on ``(run_id, seq)``.
    """

    type: Literal["tether.v1.lost_run_events"] = "tether.v1.lost_run_events"
    run_id: str
    seqs: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1,
        max_length=MAX_LOST_SEQS,
        description="The seqs given up on.",
    )
    reason: str = Field(description="Why they are lost (the dead letter's reason).")
    reported_at: float = Field(default_factory=time.time)

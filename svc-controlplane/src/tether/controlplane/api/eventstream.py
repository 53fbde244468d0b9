"""GraphQL of a run's event stream: whether every event of the run is stored, how many are
still arriving, and which an agent reported lost (``Run.eventStream``).

A run's status is what its events say (SUCCESS on the terminal event); its stream says
whether the record is whole yet: a run can be SUCCESS with events still on their way
through a relay, or with some lost for good.
"""

from __future__ import annotations

import strawberry
from tether.controlplane.store.eventstreams import StreamState


@strawberry.type(
    name="EventStream",
    description=(
        "How complete a run's record of worker events is. Complete: every seq up to the "
        "run's last (from its terminal event) is stored. Until then missingCount events are "
        "still arriving; lostSeqs are those an agent gave up on (dead-lettered)."
    ),
)
class EventStreamType:
    """How complete a run's record of worker events is."""

    complete: bool = strawberry.field(
        description="Every seq up to lastSeq is stored (false while lastSeq is unknown)."
    )
    last_seq: int | None = strawberry.field(
        description="The run's last seq, from its worker's terminal event; null until then."
    )
    stored_count: int = strawberry.field(description="Distinct worker events stored.")
    missing_count: int = strawberry.field(
        description=(
            "Seqs up to lastSeq (before it is known: up to the highest stored) neither stored "
            "nor reported lost: events still arriving."
        )
    )
    lost_count: int = strawberry.field(description="Seqs an agent reported lost (not stored).")
    lost_seqs: list[int] = strawberry.field(
        description="Those seqs, ascending (at most 1000; lostCount counts them all)."
    )
    lost_reasons: list[str] = strawberry.field(description="Why they were lost (distinct).")
    completed_at: float | None = strawberry.field(
        description="When the control plane had every event (epoch seconds)."
    )

    @classmethod
    def build(cls, state: StreamState) -> EventStreamType:
        """Build from the store's state of the stream."""
        return cls(
            complete=state.complete,
            last_seq=state.last_seq,
            stored_count=state.stored,
            missing_count=state.missing,
            lost_count=state.lost_count,
            lost_seqs=list(state.lost),
            lost_reasons=list(state.lost_reasons),
            completed_at=state.complete_at,
        )

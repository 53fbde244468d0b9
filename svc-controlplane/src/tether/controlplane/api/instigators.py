"""What the GraphQL of schedules and sensors shares: their status, their ticks, turning
them on and off.

Definitions come from the locations' current snapshots; state (on/off, cursor, ticks)
from the daemons' tables. Reading never creates state: a schedule nobody started or
stopped shows its definition's default status.
"""

from __future__ import annotations

import time

import strawberry
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.errorinfo import ErrorInfoType
from tether.controlplane.api.paging import (
    check_keyset,
    check_page,
    check_status,
    decode_cursor,
    encode_cursor,
)
from tether.controlplane.db.models import (
    Instigator,
    InstigatorKind,
    InstigatorStatus,
    InstigatorTick,
    TickStatus,
)
from tether.controlplane.store import instigator_states, instigators
from tether.controlplane.store.instigators import Definition

InstigatorStatusEnum = strawberry.enum(
    InstigatorStatus, name="InstigatorStatus", description="Whether a schedule/sensor is on."
)


@strawberry.type(name="Tick", description="One evaluation of a schedule or sensor.")
class TickType:
    """One evaluation of a schedule or sensor and its outcome."""

    id: str
    tick_time: float = strawberry.field(description="Cron tick (schedule) or evaluation time.")
    status: str = strawberry.field(description="STARTED, SUCCESS, SKIPPED or FAILURE.")
    run_ids: list[str]
    run_keys: list[str]
    skip_reason: str | None
    cursor: str | None
    error: ErrorInfoType | None

    @strawberry.field(
        description="This tick's place in the ticks list: pass it as ticks(after:) for the "
        "next page."
    )
    def page_cursor(self) -> str:
        """The keyset cursor of ``(tick_time, id)``."""
        return encode_cursor(self.tick_time, int(self.id))

    @classmethod
    def build(cls, row: InstigatorTick) -> TickType:
        """Build from a row."""
        return cls(
            id=str(row.id),
            tick_time=row.tick_time,
            status=row.status,
            run_ids=list(row.run_ids or []),
            run_keys=list(row.run_keys or []),
            skip_reason=row.skip_reason,
            cursor=row.cursor,
            error=ErrorInfoType.from_json(row.error),
        )


async def ticks_page(
    info: Info[ApiContext, None],
    state_id: int | None,
    limit: int,
    offset: int,
    status: str | None,
    after: str | None = None,
) -> list[TickType]:
    """A page of the ticks of the state ``state_id`` (none without a state); ``after``: the
    pageCursor of the last tick of the previous page."""
    check_page(limit, offset)
    check_status(status, TickStatus)
    check_keyset(after, offset)
    before = decode_cursor(after, int)[0] if after is not None else None
    if state_id is None:
        return []
    async with info.context.cp.db.reading() as session:
        rows = await instigators.list_ticks(
            session, state_id, limit=limit, offset=offset, status=status, before=before
        )
    return [TickType.build(r) for r in rows]


TICKS_DESCRIPTION = (
    "A page of its ticks, newest first (limit up to 500, offset >= 0; status: STARTED, "
    "SUCCESS, SKIPPED or FAILURE). Ask for limit + 1 to learn whether a next page exists; "
    "page on with after: the pageCursor of the last tick of the previous page."
)


async def set_status(
    info: Info[ApiContext, None],
    kind: InstigatorKind,
    location_name: str,
    name: str,
    repository_name: str | None,
    status: InstigatorStatus,
) -> tuple[Definition, Instigator]:
    """Turn a schedule or sensor on or off; its definition and new state."""
    principal = await info.context.launcher()
    now = time.time()
    async with info.context.cp.db.transaction() as session:
        definition = await instigator_states.find_definition(
            session, principal.deployment_id, kind, location_name, name, repository_name
        )
        state = await instigators.set_status(session, definition, status, now)
    return definition, state

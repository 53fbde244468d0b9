"""Pages of ticks and backfills: the bounds of limit/offset and of a status filter."""

from __future__ import annotations

from tether.controlplane.db.models import BackfillStatus, TickStatus
from tether.controlplane.errors import BadInputError

#: Most ticks or backfills one page holds.
MAX_PAGE = 500


def check_page(limit: int, offset: int) -> None:
    """Refuse a page beyond MAX_PAGE or before the first item."""
    if not 0 <= limit <= MAX_PAGE or offset < 0:
        raise BadInputError(f"limit must be within 0..{MAX_PAGE} and offset >= 0")


def check_status(status: str | None, allowed: type[TickStatus] | type[BackfillStatus]) -> None:
    """Refuse a status filter that names no status of ``allowed``."""
    if status is not None and status not in {str(s) for s in allowed}:
        raise BadInputError(
            f"unknown status {status!r}; use one of {', '.join(str(s) for s in allowed)}"
        )

"""Pages of runs, ticks and backfills: the bounds of limit/offset, of a status filter, and
the opaque keyset cursors (``pageCursor`` / ``after``) that page deep lists without OFFSET.

A cursor names the last item of a page by its sort key (its creation or tick time and its
id), so the next page is one index range read however deep it is, and an item added
meanwhile never shifts the pages.
"""

from __future__ import annotations

import base64
import binascii
import json

from tether.controlplane.db.models import BackfillStatus, TickStatus
from tether.controlplane.errors import BadInputError

#: Version prefix of the cursors' payload (a later format can still read these).
CURSOR_VERSION = 1

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


def encode_cursor(at: float, key: str | int) -> str:
    """The opaque cursor of an item sorted by ``(at, key)``."""
    raw = json.dumps([CURSOR_VERSION, at, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key_type: type[str] | type[int]) -> tuple[float, str | int]:
    """The ``(at, key)`` of a cursor :func:`encode_cursor` made.

    Raises:
        BadInputError: it is not such a cursor.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, at, key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as err:
        raise BadInputError(f"after: {cursor!r} is not a page cursor (use pageCursor)") from err
    if (
        version != CURSOR_VERSION
        or not isinstance(at, int | float)
        or isinstance(at, bool)
        or not isinstance(key, key_type)
    ):
        raise BadInputError(f"after: {cursor!r} is not a page cursor of this list")
    return float(at), key


def check_keyset(after: str | None, offset: int) -> None:
    """Refuse a page asked both after a cursor and at an offset."""
    if after is not None and offset:
        raise BadInputError("give after (a pageCursor) or offset, not both")

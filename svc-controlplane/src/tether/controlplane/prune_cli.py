"""``tether controlplane prune``: delete the history older than a retention period."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Annotated, Any

import typer

#: Seconds per unit of a duration such as ``30d``.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds of a duration ``<number><s|m|h|d|w>`` (``30d``, ``12h``, ``90m``).

    Raises:
        typer.BadParameter: it is not such a duration, or not positive.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: give a positive duration such as 30d, 12h or 90m")
    return float(match.group(1)) * UNITS[match.group(2)]


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Retention period: delete what ended before it (30d, 12h)."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
    batch: Annotated[
        int, typer.Option(min=1, max=100_000, help="Runs (items, ticks) per transaction.")
    ] = 500,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy async URL [env TETHER_CONTROLPLANE_DATABASE_URL]."),
    ] = None,
) -> None:
    """Delete ended runs (with their events, tags, log chunks and pointers), answered work
    items (with their results) and ended ticks older than --older-than, in batches.

    Kept: runs still going, runs that recorded an asset materialization, and each
    schedule's or sensor's newest tick. Prints the counts (deleted, or with --dry-run,
    that would be) as JSON.
    """
    from tether.controlplane.cli_settings import settings_or_exit

    seconds = parse_duration(older_than)
    settings = settings_or_exit(database_url=database_url)
    counts = asyncio.run(_prune(settings, time.time() - seconds, batch, dry_run))
    typer.echo(json.dumps({"dry_run": dry_run, "older_than_s": seconds, **counts}))


async def _prune(settings: Any, cutoff: float, batch: int, dry_run: bool) -> dict[str, int]:
    from tether.controlplane.db.engine import Database
    from tether.controlplane.store import retention

    # A migrated database (serve or migrate made it so): pruning never changes the schema.
    db = Database(settings.database_url)
    try:
        counts = await retention.prune(db, cutoff=cutoff, batch=batch, dry_run=dry_run)
    finally:
        await db.dispose()
    return counts.as_dict()

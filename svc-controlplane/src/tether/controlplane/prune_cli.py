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
        str | None,
        typer.Option(
            "--older-than",
            help="Retention period: delete what ended before it (30d, 12h), in deployments "
            "that set no retentionDays of their own [default: env "
            "TETHER_CONTROLPLANE_RETENTION_DAYS].",
        ),
    ] = None,
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
    items (with their results) and ended ticks older than the retention period, in batches.

    Each deployment's retention period is its own retentionDays setting
    (updateDeploymentSettings), else --older-than, else TETHER_CONTROLPLANE_RETENTION_DAYS;
    a deployment with none of them is not pruned. Kept: runs still going, runs that
    recorded an asset materialization, and each schedule's or sensor's newest tick. Prints
    the counts (deleted, or with --dry-run, that would be) as JSON, with the period of
    each deployment pruned.
    """
    from tether.controlplane.cli_settings import settings_or_exit

    settings = settings_or_exit(database_url=database_url)
    if older_than is not None:
        seconds: float | None = parse_duration(older_than)
    elif settings.retention_days is not None:
        seconds = settings.retention_days * UNITS["d"]
    else:
        seconds = None
    counts, periods = asyncio.run(_prune(settings, seconds, batch, dry_run))
    if not periods:
        typer.echo(
            "error: no retention period: give --older-than, or set "
            "TETHER_CONTROLPLANE_RETENTION_DAYS or a deployment's retentionDays",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(
        json.dumps({"dry_run": dry_run, "older_than_s": seconds, **counts, "deployments": periods})
    )


async def _prune(
    settings: Any, default_s: float | None, batch: int, dry_run: bool
) -> tuple[dict[str, int], dict[str, float]]:
    """Prune each deployment at its own period; the counts, and the period of each."""
    from tether.controlplane.db.engine import Database
    from tether.controlplane.store import deployment_settings, deployments, retention

    # A migrated database (serve or migrate made it so): pruning never changes the schema.
    db = Database(settings.database_url)
    total = retention.PruneCounts()
    periods: dict[str, float] = {}
    try:
        async with db.reading() as session:
            own = await deployment_settings.all_own_settings(session)
            ids = [d.id for d in await deployments.list_deployments(session, include_deleted=True)]
        for deployment_id in ids:
            days = own[deployment_id].retention_days if deployment_id in own else None
            seconds = days * UNITS["d"] if days is not None else default_s
            if seconds is None:
                continue
            periods[deployment_id] = seconds
            counts = await retention.prune(
                db,
                cutoff=time.time() - seconds,
                batch=batch,
                dry_run=dry_run,
                deployment_id=deployment_id,
            )
            for name, value in counts.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
    finally:
        await db.dispose()
    return total.as_dict(), periods

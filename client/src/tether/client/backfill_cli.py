"""``tether backfill list|cancel|retry``: backfills through the control plane's API.

Listing needs a viewer token, cancel and retry an editor token (``TETHER_TOKEN``, or a
file: ``--token-file`` / ``TETHER_TOKEN_FILE``); ``--url`` / ``TETHER_CONTROL_PLANE_URL``
says where the control plane is.
Backfills are launched from a partitioned job (the UI, or ``launchBackfill``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from tether.client import documents
from tether.client.remote import DEFAULT_URL, ApiCommandGroup, AsJson, Token, Url, call

app = typer.Typer(name="backfill", help="List, cancel and retry backfills.", cls=ApiCommandGroup)

#: Statuses a backfill can be in (the API's ``Backfill.status``).
STATUSES = ("REQUESTED", "COMPLETED", "FAILED", "CANCELED")


@app.callback()
def _group() -> None:
    """List, cancel and retry backfills."""


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _summary(backfill: dict[str, Any]) -> str:
    counts = " ".join(f"{k}={v}" for k, v in sorted((backfill["runCounts"] or {}).items()))
    return f"{backfill['launched']}/{len(backfill['partitionKeys'])} launched" + (
        f" ({counts})" if counts else ""
    )


@app.command("list")
def list_backfills(
    status: Annotated[
        str | None, typer.Option(help=f"Only backfills in this status ({', '.join(STATUSES)}).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most backfills to list.", min=0, max=500)] = 20,
    offset: Annotated[int, typer.Option(help="Skip this many (newest first).", min=0)] = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List backfills, newest first."""
    if status is not None and status.upper() not in STATUSES:
        raise typer.BadParameter(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    found = call(
        url,
        token,
        documents.BACKFILLS,
        limit=limit,
        offset=offset,
        status=status.upper() if status else None,
    )["backfills"]
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "job", "location", "status", "partitions", "retryable", "created (UTC)")
    for backfill in found:
        table.add_row(
            backfill["id"],
            backfill["jobName"],
            backfill["locationName"],
            backfill["status"],
            _summary(backfill),
            str(len(backfill["retryablePartitionKeys"])),
            _when(backfill["createdAt"]),
        )
    Console(width=200).print(table)


@app.command()
def cancel(
    backfill_id: Annotated[str, typer.Argument(help="Id of the backfill.")],
    terminate: Annotated[
        bool,
        typer.Option(
            "--terminate", help="Also terminate its running runs (else they run to their end)."
        ),
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a backfill: no more partitions launch and its queued runs are canceled."""
    backfill = call(url, token, documents.CANCEL_BACKFILL, id=backfill_id, terminate=terminate)[
        "cancelBackfill"
    ]
    if as_json:
        typer.echo(json.dumps(backfill, indent=2))
        return
    typer.echo(
        f"canceled backfill {backfill['id']}: {_summary(backfill)}, "
        f"{backfill['unfinishedRuns']} run(s) not finished yet"
    )


@app.command()
def retry(
    backfill_id: Annotated[str, typer.Argument(help="Id of the backfill.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Run again the partitions whose newest run failed or was canceled (or never ran)."""
    before = call(url, token, documents.BACKFILL_RETRYABLE, id=backfill_id)["backfill"]
    backfill = call(url, token, documents.RETRY_BACKFILL, id=backfill_id)["retryBackfill"]
    if as_json:
        typer.echo(json.dumps(backfill, indent=2))
        return
    keys = (before or {}).get("retryablePartitionKeys") or []
    typer.echo(
        f"retrying backfill {backfill['id']} ({backfill['status']})"
        + (f": {', '.join(keys)}" if keys else "")
    )

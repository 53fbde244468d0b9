"""``tether logship run``."""

from __future__ import annotations

import typer
from tether.logship.service import LogShip
from tether.logship.settings import LogShipSettings
from tether.shared.runtime.service import run_service, setup_logging
from tether.shared.wire.signing import WorkKeyError

app = typer.Typer(help="Batch compute logs up to the control plane.")


@app.command()
def run() -> None:
    """Run the logship (settings from TETHER_LOGSHIP_* / TETHER_* env)."""
    setup_logging()
    settings = LogShipSettings()
    try:
        service = LogShip(settings)
    except WorkKeyError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    run_service(
        service,
        tracing_name="tether-logship",
        graceful_shutdown_timeout=settings.graceful_shutdown_timeout,
        health=settings.health,
    )

"""``tether logship run``."""

from __future__ import annotations

import typer
from tether.logship.service import LogShip
from tether.logship.settings import LogShipSettings
from tether.shared.service import run_service, setup_logging

app = typer.Typer(help="Batch compute logs up to the control plane.")


@app.command()
def run() -> None:
    """Run the logship (settings from TETHER_LOGSHIP_* / TETHER_* env)."""
    setup_logging()
    settings = LogShipSettings()
    run_service(
        LogShip(settings),
        tracing_name="tether-logship",
        graceful_shutdown_timeout=settings.graceful_shutdown_timeout,
        health=settings.health,
    )

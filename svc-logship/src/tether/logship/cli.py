"""``tether logship run``."""

from __future__ import annotations

import asyncio

import typer

from tether.logship.service import LogShip
from tether.logship.settings import LogShipSettings
from tether.shared import telemetry
from tether.shared.service import serve, setup_logging

app = typer.Typer(help="Batch compute logs up to the control plane.")


@app.command()
def run() -> None:
    """Run the logship (settings from TETHER_LOGSHIP_* / TETHER_* env)."""
    setup_logging()
    settings = LogShipSettings()
    telemetry.configure_tracing("tether-logship")
    try:
        asyncio.run(serve(LogShip(settings), graceful_shutdown_timeout=settings.graceful_shutdown_timeout))
    finally:
        telemetry.shutdown_tracing()

"""``tether eventrelay run``."""

from __future__ import annotations

import asyncio

import typer

from tether.eventrelay.service import EventRelay
from tether.eventrelay.settings import EventRelaySettings
from tether.shared import telemetry
from tether.shared.service import serve, setup_logging

app = typer.Typer(help="Batch run events and work results up to the control plane.")


@app.command()
def run() -> None:
    """Run the eventrelay (settings from TETHER_EVENTRELAY_* / TETHER_* env)."""
    setup_logging()
    settings = EventRelaySettings()
    telemetry.configure_tracing("tether-eventrelay")
    try:
        asyncio.run(serve(EventRelay(settings), graceful_shutdown_timeout=settings.graceful_shutdown_timeout))
    finally:
        telemetry.shutdown_tracing()

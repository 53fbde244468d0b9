"""``tether eventrelay run``."""

from __future__ import annotations

import typer
from tether.eventrelay.service import EventRelay
from tether.eventrelay.settings import EventRelaySettings
from tether.shared.runtime.service import run_service, setup_logging

app = typer.Typer(help="Batch run events and work results up to the control plane.")


@app.command()
def run() -> None:
    """Run the eventrelay (settings from TETHER_EVENTRELAY_* / TETHER_* env)."""
    setup_logging()
    settings = EventRelaySettings()
    run_service(
        EventRelay(settings),
        tracing_name="tether-eventrelay",
        graceful_shutdown_timeout=settings.graceful_shutdown_timeout,
        health=settings.health,
    )

"""``tether poller ...`` commands."""

from __future__ import annotations

import typer
from tether.poller.service import PollerService
from tether.poller.settings import PollerSettings
from tether.shared.runtime.service import run_service, setup_logging
from tether.shared.wire.signing import WorkKeyError

app = typer.Typer(name="poller", help="Claim work from the control plane and publish it on NATS.")


@app.callback()
def _group() -> None:
    """Claim work from the control plane and publish it on NATS."""


@app.command()
def run(
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level."),
) -> None:
    """Run the poller until SIGTERM/SIGINT (settings from TETHER_POLLER_* / TETHER_* env)."""
    setup_logging(log_level)
    settings = PollerSettings()
    try:
        service = PollerService(settings)
    except WorkKeyError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    run_service(
        service,
        tracing_name="tether-poller",
        graceful_shutdown_timeout=settings.graceful_shutdown_timeout,
        health=settings.health,
    )

"""``tether launcher ...`` commands."""

from __future__ import annotations

import typer
from tether.launcher.service import LauncherService
from tether.launcher.settings import LauncherSettings
from tether.shared.runtime.service import run_service, setup_logging
from tether.shared.wire.signing import WorkKeyError

app = typer.Typer(name="launcher", help="Run code servers and run workers for work items.")


@app.callback()
def _group() -> None:
    """Run code servers and run workers for work items."""


@app.command()
def run(
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level."),
) -> None:
    """Run the launcher until SIGTERM/SIGINT (settings from TETHER_LAUNCHER_* / TETHER_* env)."""
    setup_logging(log_level)
    settings = LauncherSettings()
    try:
        service = LauncherService(settings)
    except WorkKeyError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    run_service(
        service,
        tracing_name="tether-launcher",
        graceful_shutdown_timeout=settings.graceful_shutdown_timeout,
        health=settings.health,
    )

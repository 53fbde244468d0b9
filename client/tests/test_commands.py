"""The user commands as ``tether`` sub-commands, without a control plane."""

from __future__ import annotations

from importlib.metadata import entry_points

import typer
from tether.client.alert_cli import app as alert_app
from tether.client.asset_cli import app as asset_app
from tether.client.backfill_cli import app as backfill_app
from tether.client.deployment_cli import app as deployment_app
from tether.client.location_cli import app as location_app
from tether.client.run_cli import app as run_app
from tether.client.token_cli import app as token_app

API_APPS = {
    "location": location_app,
    "run": run_app,
    "backfill": backfill_app,
    "asset": asset_app,
    "token": token_app,
    "alert": alert_app,
    "deployment": deployment_app,
}


def test_tether_client_registers_the_user_commands() -> None:
    """``tether run|location|backfill|token`` come from tether-client, not the server."""
    plugins = {ep.name: ep for ep in entry_points(group="tether.cli")}
    for name, app in API_APPS.items():
        assert plugins[name].dist is not None and plugins[name].dist.name == "tether-client"
        assert plugins[name].load() is app


def test_no_command_takes_a_token_on_the_command_line() -> None:
    for group, app in API_APPS.items():
        command = typer.main.get_command(app)
        assert command.commands  # type: ignore[attr-defined]
        for name, sub in command.commands.items():  # type: ignore[attr-defined]
            options = {opt for param in sub.params for opt in param.opts}
            assert "--token-file" in options, (group, name)
            assert not {o for o in options if o.startswith("--token") and o != "--token-file"}

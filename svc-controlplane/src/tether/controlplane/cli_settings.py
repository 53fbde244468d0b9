"""The control plane's settings as its commands read them: a bad value is one line on
stderr and exit code 2, not a traceback."""

from __future__ import annotations

from typing import Any

import typer


def settings_or_exit(**overrides: Any) -> Any:
    """ControlPlaneSettings from the environment, with the options a command was given
    (``None``: not given) on top; exits 2 saying why when they do not validate."""
    from pydantic import ValidationError
    from tether.controlplane.settings import ControlPlaneSettings

    try:
        return ControlPlaneSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        typer.echo(f"error: invalid control plane settings: {err}", err=True)
        raise typer.Exit(2) from err

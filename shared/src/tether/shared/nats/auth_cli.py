"""``tether nats-auth``: create an agent's NATS operator, account and service users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tether.shared.nats import auth as natsauth
from tether.shared.nats import perms as natsperms

app = typer.Typer(help="NATS JWT auth of an agent (operator, account, users).")


@app.callback()
def _group() -> None:
    """NATS JWT auth of an agent (operator, account, users)."""


@app.command("init")
def init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the keys, server config and .creds go (0700).")
    ] = Path("nats-auth"),
    substrate: Annotated[
        list[str] | None,
        typer.Option("--substrate", help="A launcher substrate to issue a user for (repeat)."),
    ] = None,
) -> None:
    """Create the keys in DIR (or reuse the ones there) and (re)issue every service user.

    Mount ``nats-server.conf`` into the NATS server (``-c``), each ``users/<service>.creds``
    into its service (``TETHER_NATS_CREDENTIALS``) and ``account-signing.nk`` into
    launchers only (``TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE``). Keep the operator and
    account seeds offline: only re-running this command needs them.
    """
    substrates = substrate or ["process"]
    auth = natsperms.init_agent_auth(directory, substrates)
    typer.echo(f"account {auth.account_id}")
    typer.echo(f"server config  {directory / natsauth.SERVER_CONFIG}")
    typer.echo(f"signing key    {directory / natsauth.SIGNING_SEED}  (launchers only)")
    for path in sorted((directory / natsperms.USERS_DIR).glob("*.creds")):
        typer.echo(f"user           {path}")

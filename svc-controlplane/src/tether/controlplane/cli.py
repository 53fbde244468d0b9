"""``tether controlplane ...`` commands.

Heavy imports happen inside the commands: every ``tether`` invocation may load this
module, and ``tether api execute-run`` must not pay for SQLAlchemy or strawberry.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from tether.controlplane import prune_cli
from tether.controlplane.cli_settings import settings_or_exit as _settings

app = typer.Typer(
    name="controlplane", help="The Tether control plane: GraphQL API and metadata DB."
)


@app.callback()
def _group() -> None:
    """The Tether control plane: GraphQL API and metadata DB."""


app.command("prune")(prune_cli.prune)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind [env TETHER_CONTROLPLANE_HOST].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="HTTP port [env TETHER_CONTROLPLANE_PORT].")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy async URL [env TETHER_CONTROLPLANE_DATABASE_URL]."),
    ] = None,
    agent_token_file: Annotated[
        Path | None,
        typer.Option(help="Dev agent token file [env TETHER_CONTROLPLANE_AGENT_TOKEN_FILE]."),
    ] = None,
    workspace_file: Annotated[
        Path | None,
        typer.Option(help="Code locations TOML [env TETHER_CONTROLPLANE_WORKSPACE_FILE]."),
    ] = None,
    migrate: Annotated[
        bool | None,
        typer.Option(
            "--migrate/--no-migrate",
            help="Migrate the DB first [env TETHER_CONTROLPLANE_MIGRATE_ON_START; "
            "default: on SQLite only, else run `migrate` once].",
        ),
    ] = None,
    daemons: Annotated[
        bool | None,
        typer.Option(
            "--daemons/--no-daemons",
            help="Run the daemons and the run monitor beside the API [env "
            "TETHER_CONTROLPLANE_DAEMONS; default on]; --no-daemons serves only the API "
            "(run `tether controlplane daemons` elsewhere).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Bootstrap the DB and serve the API (with the daemons) until SIGTERM/SIGINT.

    On PostgreSQL run `tether controlplane migrate` first (or pass --migrate); a DB not
    migrated to this version is refused.
    """
    from tether.controlplane.errors import BootstrapError
    from tether.controlplane.service import ControlPlaneService
    from tether.shared.runtime import telemetry
    from tether.shared.runtime.service import serve as serve_service
    from tether.shared.runtime.service import setup_logging

    setup_logging(log_level)
    # Alembic announces each of its plugins at INFO; the migrations themselves stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        agent_token_file=agent_token_file,
        workspace_file=workspace_file,
        migrate_on_start=migrate,
        **({} if daemons is None else {"daemons": daemons, "run_monitor": daemons}),
    )
    telemetry.configure_tracing("tether-controlplane")
    try:
        asyncio.run(
            serve_service(
                ControlPlaneService(settings),
                graceful_shutdown_timeout=settings.graceful_shutdown_timeout,
            )
        )
    except BootstrapError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    finally:
        telemetry.shutdown_tracing()


@app.command()
def migrate(
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy async URL [env TETHER_CONTROLPLANE_DATABASE_URL]."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Migrate the DB to this version's schema, then exit.

    On PostgreSQL under an advisory lock: of several at once (an init job per replica),
    one migrates and the others wait, then find nothing to do. Run it before starting
    `serve` and `daemons` (a Kubernetes Job, a compose one-off service).
    """
    from tether.controlplane.db.engine import migrate as run_migrations
    from tether.shared.runtime.service import setup_logging

    setup_logging(log_level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    settings = _settings(database_url=database_url)
    try:
        before, after = run_migrations(settings.database_url)
    except Exception as err:  # unreachable DB, failed migration: say so, exit 1
        typer.echo(f"error: migrating the database failed: {err}", err=True)
        raise typer.Exit(1) from err
    if before == after:
        typer.echo(f"database already at revision {after}; nothing to migrate")
    else:
        typer.echo(f"migrated the database from revision {before or '(empty)'} to {after}")


def _daemon_settings(database_url: str | None, migrate: bool | None) -> Any:
    return _settings(database_url=database_url, migrate_on_start=migrate)


_MigrateOption = Annotated[
    bool | None,
    typer.Option(
        "--migrate/--no-migrate",
        help="Migrate the DB first [env TETHER_CONTROLPLANE_MIGRATE_ON_START; "
        "default: on SQLite only].",
    ),
]
_HealthPortOption = Annotated[
    int | None,
    typer.Option(help="Serve /healthz and /readyz on this port (liveness probes)."),
]


@app.command()
def daemons(
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy async URL [env TETHER_CONTROLPLANE_DATABASE_URL]."),
    ] = None,
    migrate: _MigrateOption = None,
    health_host: Annotated[str, typer.Option(help="Interface of the health port.")] = "127.0.0.1",
    health_port: _HealthPortOption = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Run every daemon (run coordinator, scheduler, sensors, backfills, run retrier, run
    monitor) and no API, until SIGTERM/SIGINT.

    For deployments that serve the API apart (`serve --no-daemons`). On PostgreSQL each
    daemon runs in one process at a time, the holder of its advisory lock; start two
    `daemons` processes and the second is a hot standby that takes over within
    TETHER_CONTROLPLANE_LEADER_RETRY_S when the leader dies.
    """
    _run_daemons(
        _daemon_settings(database_url, migrate),
        only_monitor=False,
        log_level=log_level,
        health=(health_host, health_port) if health_port is not None else None,
    )


@app.command("run-monitor")
def run_monitor(
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy async URL [env TETHER_CONTROLPLANE_DATABASE_URL]."),
    ] = None,
    migrate: _MigrateOption = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Run only the run monitor (stuck and orphaned runs -> FAILURE) until SIGTERM/SIGINT.

    `tether controlplane daemons` runs it with the others; intervals and timeouts come from
    TETHER_CONTROLPLANE_RUN_MONITOR_INTERVAL_S, _RUN_START_TIMEOUT_S, _WORKER_EXIT_GRACE_S.
    """
    _run_daemons(_daemon_settings(database_url, migrate), only_monitor=True, log_level=log_level)


def _run_daemons(
    settings: Any,
    *,
    only_monitor: bool,
    log_level: str,
    health: tuple[str, int] | None = None,
) -> None:
    from tether.controlplane.errors import BootstrapError
    from tether.controlplane.service import DaemonsService
    from tether.shared.runtime import telemetry
    from tether.shared.runtime.service import serve as serve_service
    from tether.shared.runtime.service import setup_logging

    setup_logging(log_level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    telemetry.configure_tracing("tether-controlplane-daemons")
    service = DaemonsService(settings, only_monitor=only_monitor)
    try:
        asyncio.run(
            serve_service(
                service,
                graceful_shutdown_timeout=settings.graceful_shutdown_timeout,
                health=health,
            )
        )
    except BootstrapError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    finally:
        telemetry.shutdown_tracing()


@app.command("schema")
def schema() -> None:
    """Print the GraphQL schema (SDL); svc-controlplane/schema.graphql is its committed copy."""
    from tether.controlplane.api.schema import schema_sdl

    typer.echo(schema_sdl(), nl=False)


@app.command("create-token")
def create_token(
    name: Annotated[str, typer.Option(help="What the token is for (shown in listings).")],
    role: Annotated[
        str, typer.Option(help="viewer, editor (alias launcher), admin or agent.")
    ] = "agent",
    deployment: Annotated[str, typer.Option(help="Deployment of the token.")] = "default",
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy async URL [env TETHER_CONTROLPLANE_DATABASE_URL]."),
    ] = None,
) -> None:
    """Issue a token straight into the DB and print it once (only its hash is stored).

    For bootstrapping (the first admin token of a deployment, agent tokens at install);
    afterwards ``tether token create`` does the same through the API with an admin token.
    """
    from tether.controlplane.errors import BadInputError
    from tether.controlplane.security.auth import Role

    try:
        parsed_role = Role.parse(role)
    except BadInputError as err:
        typer.echo(f"error: {err.message}", err=True)
        raise typer.Exit(2) from err
    settings = _settings(database_url=database_url)
    token = asyncio.run(_create_token(settings.database_url, name, parsed_role, deployment))
    typer.echo(
        f"created {parsed_role} token {name!r} for deployment {deployment!r}; "
        "it is shown only once:",
        err=True,
    )
    typer.echo(token)


async def _create_token(database_url: str, name: str, role: Any, deployment: str) -> str:
    from tether.controlplane.db.engine import Database, migrate
    from tether.controlplane.security import auth

    await asyncio.to_thread(migrate, database_url)
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            return await auth.create_token(session, name=name, role=role, deployment_id=deployment)
    finally:
        await db.dispose()


@app.command("work-key")
def work_key(
    key_file: Annotated[
        Path | None,
        typer.Option(help="Work signing key file [env TETHER_CONTROLPLANE_WORK_SIGNING_KEY_FILE]."),
    ] = None,
) -> None:
    """Print the public key that signs work items, for agents to pin.

    Give its line to every agent service as TETHER_WORK_PUBLIC_KEYS (during a key
    rotation, both keys: TETHER_WORK_PUBLIC_KEYS=old,new). The private key file is
    created (mode 0600) when it is missing, as the control plane's first start would.
    """
    from tether.controlplane.errors import BootstrapError
    from tether.controlplane.security.workkeys import load_or_create_signer

    settings = _settings(work_signing_key_file=key_file)
    try:
        signer, created = load_or_create_signer(settings.work_signing_key_path)
    except BootstrapError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    if created:
        typer.echo(f"created the work signing key {settings.work_signing_key_path}", err=True)
    typer.echo(signer.public_key)

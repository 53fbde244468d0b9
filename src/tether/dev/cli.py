"""``tether dev``: run the whole stack locally until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from tether.dev.stack import AGENT_SERVICES, DevStack, StackConfig, StackError, Supervisor

app = typer.Typer(help="Run the whole Tether stack locally on embedded defaults.")

DEFAULT_WORKSPACE = Path("examples/workspace.toml")
#: Most processes ``--scale`` starts for one agent service, and most NATS nodes.
MAX_REPLICAS = 9


def parse_scale(specs: list[str]) -> dict[str, int]:
    """``["launcher=2", "eventrelay=3"]`` -> ``{"launcher": 2, "eventrelay": 3}``.

    Raises:
        typer.BadParameter: a spec that is not ``SERVICE=N`` with an agent service and
            1 <= N <= MAX_REPLICAS.
    """
    replicas: dict[str, int] = {}
    for spec in specs:
        service, sep, count = spec.partition("=")
        service = service.strip()
        if not sep or service not in AGENT_SERVICES:
            raise typer.BadParameter(
                f"{spec!r}: expected SERVICE=N with SERVICE one of {', '.join(AGENT_SERVICES)}",
                param_hint="--scale",
            )
        try:
            n = int(count)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_REPLICAS:
            raise typer.BadParameter(
                f"{spec!r}: N must be a whole number from 1 to {MAX_REPLICAS}",
                param_hint="--scale",
            )
        replicas[service] = n
    return replicas


def nats_cluster(nodes: int, client_port: int, route_port: int) -> tuple[tuple[int, int], ...]:
    """(client port, route port) of each node: consecutive ports from the given ones; ``()``
    (one plain server) for one node."""
    if nodes == 1:
        return ()
    return tuple((client_port + i, route_port + i) for i in range(nodes))


@app.callback(invoke_without_command=True)
def dev(
    home: Path = typer.Option(Path(".tether"), help="State directory (NATS store, DB, logs)."),
    port: int = typer.Option(3000, help="Control plane HTTP port."),
    nats_port: int = typer.Option(4222, help="NATS client port."),
    workspace: Path | None = typer.Option(
        None, help="Code locations TOML (default: examples/workspace.toml if present)."
    ),
    quiet: bool = typer.Option(False, help="Write service output only to log files."),
    database_url: str | None = typer.Option(
        None,
        envvar="TETHER_DEV_DATABASE_URL",
        help="The control plane's database instead of SQLite under --home: an existing "
        "PostgreSQL database (postgresql+psycopg://user:pass@host/db), migrated at start.",
    ),
    nats_nodes: int = typer.Option(
        1,
        min=1,
        max=MAX_REPLICAS,
        help="NATS servers: 1, or a JetStream cluster of this many nodes (client ports from "
        "--nats-port up, route ports from --nats-route-port up; streams replicated on each).",
    ),
    nats_route_port: int = typer.Option(6222, help="First NATS cluster route port."),
    scale: list[str] = typer.Option(
        [],
        metavar="SERVICE=N",
        help=f"Run N processes of an agent service ({', '.join(AGENT_SERVICES)}); repeatable.",
    ),
) -> None:
    """Start NATS, the control plane and every agent service; restart one that exits; stop
    them all on Ctrl-C."""
    console = Console()
    if workspace is None and DEFAULT_WORKSPACE.exists():
        workspace = DEFAULT_WORKSPACE
    config = StackConfig(
        home=home.resolve(),
        port=port,
        nats_port=nats_port,
        workspace_file=workspace.resolve() if workspace else None,
        echo=None if quiet else sys.stdout,
        replicas=parse_scale(scale),
        nats_cluster=nats_cluster(nats_nodes, nats_port, nats_route_port),
        database_url=database_url,
    )
    stack = DevStack(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # A shell may start us with SIGINT ignored (background jobs); Ctrl-C must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with console.status("starting Tether...") as status:
            stack.start(progress=lambda what: status.update(f"starting {what}"))
    except StackError as err:
        console.print(f"[red]tether dev failed to start:[/red] {err}")
        raise typer.Exit(1) from err
    except KeyboardInterrupt:
        console.print("interrupted; stopping")
        stack.stop()
        raise typer.Exit(130) from None
    console.print(
        f"[green]Tether is running.[/green]\n"
        f"  UI / API     {config.url}\n"
        f"  sign in      {stack.sign_in_url}\n"
        f"  GraphiQL     {config.url}/graphql (header Authorization: Bearer <admin token>)\n"
        f"  admin token  {config.admin_token_file} (also for the API and `tether` CLI)\n"
        f"  NATS         {config.nats_url}\n"
        f"  database     {make_url(config.control_plane_database_url)!r}\n"
        f"  state, logs  {config.home} (logs in {config.log_dir})\n"
        f"  locations    {workspace or 'none'}\n"
        "Press Ctrl-C to stop.",
        # No wrapping: the sign-in link must stay one line to be clicked or copied.
        soft_wrap=True,
    )
    # From here Ctrl-C only asks to stop, so it never lands in the middle of a restart
    # (a process started but not yet tracked would outlive the stack).
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    supervisor = Supervisor(stack)
    failed = False
    try:
        while not stop.wait(1.0):
            supervisor.check(report=lambda what: console.print(f"[yellow]{what}[/yellow]"))
    except StackError as err:
        console.print(f"[red]giving up:[/red] {err}")
        failed = True
    finally:
        with console.status("stopping every process..."):
            stack.stop()
        console.print("stopped.")
    if failed:
        raise typer.Exit(1)

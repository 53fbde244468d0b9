"""``tether codeserver ...``: run a location's gRPC code server.

Kept import-light: the ``tether`` command imports every plugin's CLI module, so heavy
imports (grpc, the user's code) happen only inside the command that needs them.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="codeserver", help="The gRPC code server of a code location.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """The gRPC code server of a code location."""


@app.command("grpc")
def grpc_command(
    location_json: Annotated[str, typer.Option("--location-json", help="LocationConfig as JSON.")],
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port; 0 picks a free one.")] = None,
) -> None:
    """Load the location and serve it over gRPC.

    Prints exactly one line to stdout once the port is bound: a CodeServerReady JSON
    object with the address and pid. Everything else goes to stderr.
    """
    from tether.codeserver.main import run_code_server

    raise typer.Exit(run_code_server(location_json, host=host, port=port))


@app.command("forkserver")
def forkserver_command(
    location_json: Annotated[str, typer.Option("--location-json", help="LocationConfig as JSON.")],
    socket_path: Annotated[str, typer.Option("--socket", help="Unix socket path to listen on.")],
    stdout_fd: Annotated[
        int | None, typer.Option(help="Inherited fd that becomes stdout once ready.")
    ] = None,
    stderr_fd: Annotated[
        int | None, typer.Option(help="Inherited fd that becomes stderr once ready.")
    ] = None,
) -> None:
    """Import the location once, then fork a run worker per request on a Unix socket.

    Prints exactly one line to stdout once it accepts requests: a ForkServerReady JSON
    object. Everything else goes to stderr. Process substrate only.
    """
    from tether.codeserver.forkserver.main import run_fork_server

    raise typer.Exit(
        run_fork_server(location_json, socket_path, stdout_fd=stdout_fd, stderr_fd=stderr_fd)
    )

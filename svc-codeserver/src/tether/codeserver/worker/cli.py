"""``tether api execute-run '<ExecuteRunArgs JSON>'``: execute one run in this process.

Kept import-light: the ``tether`` command imports every plugin's CLI module.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="api", help="Commands launchers run in user-code environments.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """Commands launchers run in user-code environments."""


@app.command("execute-run")
def execute_run_command(
    args_json: Annotated[str, typer.Argument(help="ExecuteRunArgs as JSON.")],
) -> None:
    """Execute one run and publish its events and logs to NATS.

    Exit code 0 once the run's terminal event (success, failure or canceled) is
    acknowledged by JetStream; 1 when the worker itself could not finish (NATS
    unreachable); 2 when the argument is malformed.
    """
    from tether.codeserver.worker.main import execute_run

    raise typer.Exit(execute_run(args_json))

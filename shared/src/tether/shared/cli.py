"""The ``tether`` command. Each installed distribution adds its sub-commands.

Distributions register a typer app under the ``tether.cli`` entry-point group, so an
image that installs only ``tether-codeserver`` still has ``tether api execute-run``.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

app = typer.Typer(name="tether", help="Tether: hybrid data orchestration.", no_args_is_help=True)


def _load_plugins() -> None:
    for ep in sorted(entry_points(group="tether.cli"), key=lambda e: e.name):
        sub = ep.load()
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)
        else:
            app.command(ep.name)(sub)


def main() -> None:
    """Entry point of the ``tether`` console script."""
    _load_plugins()
    app()


if __name__ == "__main__":
    main()

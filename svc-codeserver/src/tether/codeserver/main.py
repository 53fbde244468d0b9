"""Process entry of the code server: settings, stdout discipline, load, serve."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import IO

from tether.codeserver.settings import CodeServerSettings
from tether.shared.errors import ContractError
from tether.shared.messages import LocationConfig, decode
from tether.shared.service import serve, setup_logging

log = logging.getLogger(__name__)


def _reserve_stdout() -> IO[str]:
    """Keep the real stdout for the ready line only; send every other write to stderr.

    User code may print at import time (or later); on the real stdout that would corrupt
    the one line a launcher parses, or block the server once the launcher stops reading.
    """
    sys.stdout.flush()
    ready_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(ready_fd, "w", buffering=1)


def run_code_server(location_json: str, *, host: str | None, port: int | None) -> int:
    """Run a code server until SIGTERM/SIGINT; return the process exit code."""
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = CodeServerSettings(**overrides)
    setup_logging(settings.log_level)
    try:
        location = decode(location_json, LocationConfig)
    except ContractError as err:
        print(f"invalid --location-json: {err}", file=sys.stderr)
        return 2
    ready_stream = _reserve_stdout()

    from tether.codeserver.loader import load_location
    from tether.codeserver.server import CodeServerService

    loaded = load_location(location)
    if loaded.error is not None:
        log.error(
            "location %r failed to load; serving the error:\n%s",
            location.name,
            loaded.error.traceback or loaded.error.message,
        )
    service = CodeServerService(loaded, settings, ready_stream)
    try:
        asyncio.run(serve(service, graceful_shutdown_timeout=settings.graceful_shutdown_timeout))
    except KeyboardInterrupt:
        pass
    return 0

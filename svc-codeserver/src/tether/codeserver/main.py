"""Process entry of the code server: settings, stdout discipline, load, serve."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import IO, TYPE_CHECKING, Any

from tether.codeserver.settings import CodeServerSettings
from tether.shared.grpc.auth import (
    CODESERVER_TLS_CERT_ENV,
    CODESERVER_TLS_KEY_ENV,
    CODESERVER_TOKEN_ENV,
)
from tether.shared.runtime.service import serve, setup_logging
from tether.shared.wire.base import decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.locations import LocationConfig

if TYPE_CHECKING:
    from tether.codeserver.server import CodeServerService

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
    # Noted first: the launcher may die while the location's code is still importing.
    parent = os.getppid()
    # Only what the command line set: the rest comes from the environment (pydantic
    # validates the values).
    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port}.items() if v is not None
    }
    settings = CodeServerSettings(**overrides)
    # Read once, then gone: the location's code (imported below) and whatever it spawns
    # must not find the token in the environment.
    for name in (CODESERVER_TOKEN_ENV, CODESERVER_TLS_KEY_ENV, CODESERVER_TLS_CERT_ENV):
        os.environ.pop(name, None)
    setup_logging(settings.log_level)
    try:
        location = decode(location_json, LocationConfig)
    except ContractError as err:
        print(f"invalid --location-json: {err}", file=sys.stderr)
        return 2
    if settings.token is None or not settings.token.get_secret_value():
        print(
            f"{CODESERVER_TOKEN_ENV} is not set: a code server answers only callers that "
            "present the token its launcher gave it",
            file=sys.stderr,
        )
        return 2
    if (settings.tls_cert is None) != (settings.tls_key is None):
        print(
            f"set both {CODESERVER_TLS_CERT_ENV} and {CODESERVER_TLS_KEY_ENV}, or neither",
            file=sys.stderr,
        )
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
        asyncio.run(_serve(service, settings, parent))
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(service: CodeServerService, settings: CodeServerSettings, parent: int) -> None:
    watch = None
    if service.lifeline.grace_s is not None:
        watch = asyncio.create_task(_watch_parent(service, parent, settings.orphan_output))
    try:
        await serve(service, graceful_shutdown_timeout=settings.graceful_shutdown_timeout)
    finally:
        if watch is not None:
            watch.cancel()


async def _watch_parent(
    service: CodeServerService, parent: int, orphan_output: str, interval_s: float = 0.5
) -> None:
    """Stop once the parent launcher is gone and no launcher adopted us within the grace."""
    lifeline = service.lifeline
    # A parent that dies (even by SIGKILL) gets us re-parented: the pid we see changes.
    while os.getppid() == parent:
        await asyncio.sleep(interval_s)
    lifeline.orphan()
    _redirect_output(orphan_output)
    log.warning(
        "the launcher that started this code server (pid %d) is gone; serving %.0fs more "
        "unless a launcher adopts it",
        parent,
        lifeline.grace_s or 0.0,
    )
    while not lifeline.expired():
        await asyncio.sleep(interval_s)
    log.warning("no launcher adopted this code server within %.0fs; stopping", lifeline.grace_s)
    service.shutdown()


def _redirect_output(path: str) -> None:
    """Point stdout and stderr away from the pipes the dead launcher used to read.

    Writes to a pipe without a reader fail (EPIPE), which would turn every print of user
    code, and every log line, into an error.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)

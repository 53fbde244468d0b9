"""Process entry of a fork server: import everything once, then serve fork requests.

Exit codes: 0 after SIGTERM/SIGINT, 2 for a malformed ``--location-json``, 3 when it
stopped because the location's code changed (start a new one), 4 when the location's
code started threads at import (forking would copy a half-held lock: start runs cold).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import threading

from tether.codeserver.main import _reserve_stdout
from tether.codeserver.settings import CodeServerSettings
from tether.shared.runtime.service import setup_logging
from tether.shared.wire.base import decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.forkserver import ForkServerReady
from tether.shared.wire.locations import LocationConfig

log = logging.getLogger(__name__)

EXIT_CODE_THREADS = 4

#: What every run worker imports; imported here once so no child pays for it again.
_PRELOAD = (
    "tether.codeserver.worker.main",
    "jsonschema",
    "opentelemetry.sdk.resources",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
    "nats.js",
    "ssl",
    "concurrent.futures.thread",  # asyncio.run_coroutine_threadsafe imports it lazily
)
_OTLP = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def _preload() -> None:
    modules = list(_PRELOAD)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        modules.append(_OTLP)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:  # only a speed-up: the child imports what it needs
            log.debug("not preloading %s: %s", name, err)
    try:
        # jsonschema builds its validator classes and format checkers lazily.
        from jsonschema import Draft202012Validator

        list(Draft202012Validator({"type": "object"}).iter_errors({}))
    except ImportError:
        pass


def _adopt_output(stdout_fd: int | None, stderr_fd: int | None) -> None:
    """Point fds 1 and 2 at the launcher's own stdout/stderr, once ready.

    Until then they are pipes the launcher reads (to explain a failed start). After, run
    workers forked from here must write where cold ones do, and must not depend on this
    process's pipes: a replaced fork server's pipes lose their reader while its children
    still run.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for fd, target in ((stdout_fd, 1), (stderr_fd, 2)):
        if fd is not None:
            os.dup2(fd, target)
            os.close(fd)


def run_fork_server(
    location_json: str,
    socket_path: str,
    *,
    stdout_fd: int | None = None,
    stderr_fd: int | None = None,
) -> int:
    """Run a fork server until SIGTERM/SIGINT; return the process exit code.

    Args:
        location_json: the LocationConfig.
        socket_path: where to listen.
        stdout_fd: inherited fd that becomes fd 1 once ready (the launcher's stdout).
        stderr_fd: inherited fd that becomes fd 2 once ready (the launcher's stderr).
    """
    settings = CodeServerSettings()
    setup_logging(settings.log_level)
    try:
        location = decode(location_json, LocationConfig)
    except ContractError as err:
        print(f"invalid --location-json: {err}", file=sys.stderr)
        return 2
    ready_stream = _reserve_stdout()

    from tether.codeserver.forkserver.server import ForkServer
    from tether.codeserver.forkserver.sources import SourceFiles
    from tether.codeserver.loader import load_location

    _preload()
    loaded = load_location(location)
    if loaded.error is not None:
        # Served anyway: each child imports again and reports the error as a cold
        # worker would (the code may be fixed by then).
        log.warning("location %r failed to load: %s", location.name, loaded.error.message)
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        log.error(
            "location %r started threads at import (%s); a fork server must stay "
            "single-threaded, so its runs start cold",
            location.name,
            ", ".join(threads),
        )
        return EXIT_CODE_THREADS
    sources = SourceFiles.snapshot(location)
    server = ForkServer(loaded, socket_path, sources)
    server.bind()
    # Everything allocated so far is shared copy-on-write with every child; keep the
    # collector from touching (and so copying) those pages in the children.
    gc.collect()
    gc.freeze()
    ready = ForkServerReady(
        socket_path=socket_path, pid=os.getpid(), location_loaded=loaded.error is None
    )
    ready_stream.write(ready.model_dump_json() + "\n")
    # Closed, so no child inherits the launcher's ready pipe.
    ready_stream.close()
    _adopt_output(stdout_fd, stderr_fd)
    log.info("fork server for %s ready on %s", location.name, socket_path)
    return server.serve()

"""What a forked child does: drop the fork server's state and become one run's worker."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import traceback

from tether.codeserver.loader import LoadedLocation
from tether.shared.wire.forkserver import ForkExited, ForkRequest, encode_frame

#: Exit code of a child whose framework code (not the run) raised unexpectedly.
CHILD_CRASHED = 70


def become_run_worker(
    request: ForkRequest,
    conn: socket.socket,
    started_fd: int,
    inherited: list[socket.socket | int],
    loaded: LoadedLocation,
) -> int:
    """Turn this freshly forked process into the run worker of ``request``; return its code.

    Runs in the child only, and returns the exit code instead of exiting: the caller must
    ``os._exit`` with it, so that nothing of the fork server's stack (``finally`` blocks
    that unlink its socket...) runs in the child.

    Args:
        request: the run.
        conn: the launcher's connection (the child reports its exit code on it).
        started_fd: write end of a pipe the fork server waits on until the child leads its
            own session (so a SIGTERM to the reported pid's group reaches it).
        inherited: the fork server's sockets and fds the child must not keep.
        loaded: the location as the fork server imported it.
    """
    # Signals first: the fork server's handlers write to its wakeup pipe and set its
    # flags; a run worker starts from the interpreter defaults, as a cold one does.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for item in inherited:
        try:
            item.close() if isinstance(item, socket.socket) else os.close(item)
        except OSError:
            pass
    # Its own session and process group, as the cold worker's start_new_session=True:
    # terminating the run signals the group, and nothing reaches the fork server.
    os.setsid()
    os.write(started_fd, b"1")
    os.close(started_fd)
    os.environ.update(request.env)
    conn.setblocking(True)
    args_json = request.args.model_dump_json()
    # What user code sees of its command line is what the cold worker's would be.
    sys.argv = [sys.argv[0], "api", "execute-run", args_json]

    from tether.codeserver.worker.main import execute_run

    return execute_run(args_json, loaded=loaded)


def _report_exit(conn: socket.socket, code: int) -> None:
    try:
        # Told here, not only when the fork server reaps us: the fork server may be gone.
        conn.sendall(encode_frame(ForkExited(pid=os.getpid(), exit_code=code)))
    except BaseException:  # noqa: BLE001, S110 - the child must reach os._exit regardless
        pass  # the launcher went away; the fork server still reports on reaping


def run_child(
    request: ForkRequest,
    conn: socket.socket,
    started_fd: int,
    inherited: list[socket.socket | int],
    loaded: LoadedLocation,
) -> None:
    """Entry of the child right after ``os.fork()``; never returns."""
    code = CHILD_CRASHED
    try:
        code = become_run_worker(request, conn, started_fd, inherited, loaded)
        # What a cold interpreter does at exit: join the non-daemon threads user code
        # left behind (as multiprocessing's forked children do), then run exit handlers.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else CHILD_CRASHED
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001, S110 - nothing left to report with
            pass
    finally:
        _report_exit(conn, code)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001, S110 - exiting anyway
                pass
        os._exit(code)

"""The fork server's loop: accept fork requests on a Unix socket, fork, reap, report.

Single-threaded on purpose: ``fork()`` copies only the calling thread, so a thread
holding a lock (logging, an event loop, a NATS client) at fork time would leave that lock
held forever in the child. No asyncio either: a child forked from inside a running event
loop would inherit the loop's state. The loop is a plain ``selectors`` loop; signals
(SIGCHLD, SIGTERM) wake it through ``signal.set_wakeup_fd``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass, field

from tether.codeserver.forkserver.child import CHILD_CRASHED, run_child
from tether.codeserver.forkserver.sources import SourceFiles
from tether.codeserver.loader import LoadedLocation
from tether.shared.wire.base import WireModel
from tether.shared.wire.errors import ContractError
from tether.shared.wire.forkserver import (
    FRAME_HEADER,
    ForkExited,
    ForkRefused,
    ForkRequest,
    ForkStarted,
    decode_frame_length,
    decode_request,
    encode_frame,
)

log = logging.getLogger(__name__)

#: Exit code of a fork server that stopped because the location's code changed.
EXIT_CODE_CHANGED = 3

_SEND_TIMEOUT_S = 5.0
_PARENT_CHECK_S = 1.0


@dataclass
class _Connection:
    """A launcher connection waiting for its request."""

    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)

    def request(self) -> ForkRequest | None:
        """The request once fully received (None while incomplete).

        Raises:
            ContractError: the frame is malformed.
        """
        if len(self.buf) < FRAME_HEADER.size:
            return None
        length = decode_frame_length(bytes(self.buf[: FRAME_HEADER.size]))
        if len(self.buf) < FRAME_HEADER.size + length:
            return None
        return decode_request(bytes(self.buf[FRAME_HEADER.size : FRAME_HEADER.size + length]))


class ForkServer:
    """Forks run workers for one code location from this already-warm process.

    Args:
        loaded: the location, imported once here (or the error that prevented it).
        socket_path: Unix socket to listen on (created; removed at exit).
        sources: the location's files as imported, to notice code changes.
    """

    def __init__(self, loaded: LoadedLocation, socket_path: str, sources: SourceFiles) -> None:
        self._loaded = loaded
        self._location = loaded.config
        self._socket_path = socket_path
        self._sources = sources
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r = -1
        self._wake_w = -1
        self._pending: dict[int, _Connection] = {}
        self._children: dict[int, socket.socket] = {}
        self._stopping = False
        self._exit_code = 0
        self.forked = 0

    def bind(self) -> None:
        """Create the listening socket (before the ready line is printed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._socket_path)
        os.chmod(self._socket_path, 0o600)  # only the launcher's user may ask for forks
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener

    def serve(self) -> int:
        """Serve until SIGTERM/SIGINT (or the code changed); return the exit code."""
        assert self._listener is not None, "bind() first"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        parent = os.getppid()
        try:
            while not self._stopping:
                # The timeout only serves to notice that the launcher died (we were
                # reparented): an orphaned fork server would otherwise live forever.
                events = self._selector.select(timeout=_PARENT_CHECK_S)
                if os.getppid() != parent:
                    log.warning("the launcher (pid %d) is gone; stopping", parent)
                    break
                for key, _ in events:
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wakeups()
                        self._reap()
                    else:
                        self._receive(key.fileobj)  # type: ignore[arg-type]
        finally:
            self._close()
        return self._exit_code

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only flags here; the loop does the work once select() returns.
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self._pending[sock.fileno()] = _Connection(sock)
            self._selector.register(sock, selectors.EVENT_READ, "conn")

    def _receive(self, sock: socket.socket) -> None:
        conn = self._pending[sock.fileno()]
        try:
            data = sock.recv(64 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.buf += data
        try:
            request = conn.request()
        except ContractError as err:
            log.warning("malformed fork request: %s", err)
            self._reply(conn.sock, ForkRefused(reason=f"malformed request: {err}"))
            self._drop(conn)
            return
        if request is None:
            return
        self._selector.unregister(sock)
        del self._pending[sock.fileno()]
        self._handle(request, sock)

    def _drop(self, conn: _Connection) -> None:
        self._selector.unregister(conn.sock)
        self._pending.pop(conn.sock.fileno(), None)
        conn.sock.close()

    def _refuse(self, sock: socket.socket, reason: str) -> None:
        self._reply(sock, ForkRefused(reason=reason))
        sock.close()

    def _handle(self, request: ForkRequest, sock: socket.socket) -> None:
        run_id = request.args.run.run_id
        if request.args.location != self._location:
            self._refuse(sock, "the run's location config differs from this fork server's")
            return
        changed = self._sources.changed()
        if changed is not None:
            # Serving the old code would differ from the cold path: refuse, and stop so
            # the launcher starts a fork server with the new code.
            log.info("code of %s changed (%s); stopping", self._location.name, changed)
            self._refuse(sock, f"the location's code changed: {changed}")
            self._exit_code = EXIT_CODE_CHANGED
            self._stopping = True
            return
        pid = self._fork(request, sock)
        if pid is None:
            return
        self.forked += 1
        self._children[pid] = sock
        log.info("forked run worker %d for run %s", pid, run_id)
        self._reply(sock, ForkStarted(pid=pid))

    def _fork(self, request: ForkRequest, sock: socket.socket) -> int | None:
        # Anything still buffered would be written twice (by us and by the child).
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        started_r, started_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as err:
            os.close(started_r)
            os.close(started_w)
            log.error("fork failed: %s", err)
            self._refuse(sock, f"fork failed: {err}")
            return None
        if pid == 0:
            try:
                inherited: list[socket.socket | int] = [self._wake_r, self._wake_w, started_r]
                inherited += [c.sock for c in self._pending.values()]
                inherited += list(self._children.values())
                if self._listener is not None:
                    inherited.append(self._listener)
                fileno = getattr(self._selector, "fileno", None)
                if fileno is not None:  # epoll: the child keeps nothing of the server's loop
                    inherited.append(fileno())
                run_child(request, sock, started_w, inherited, self._loaded)
            finally:
                # run_child never returns; a child must never fall back into this loop.
                os._exit(CHILD_CRASHED)
        os.close(started_w)
        # Wait until the child leads its own session: a SIGTERM the launcher sends to the
        # reported pid's group right away must reach it. EOF = it died before that.
        with contextlib.suppress(OSError):
            os.read(started_r, 1)
        os.close(started_r)
        return pid

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            sock = self._children.pop(pid, None)
            log.info("run worker %d exited with %d", pid, code)
            if sock is not None:
                self._reply(sock, ForkExited(pid=pid, exit_code=code))
                sock.close()

    def _reply(self, sock: socket.socket, message: WireModel) -> None:
        try:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.sendall(encode_frame(message))
        except OSError as err:
            # The launcher went away: the child runs on (as a cold worker would).
            if err.errno not in (errno.EPIPE, errno.ECONNRESET, None):
                log.warning("cannot reply %s: %s", type(message).__name__, err)

    def _close(self) -> None:
        signal.set_wakeup_fd(-1)
        for conn in list(self._pending.values()):
            conn.sock.close()
        # Children keep running on their own, exactly as cold workers outlive a launcher;
        # they report their exit code to the launcher themselves.
        for sock in self._children.values():
            sock.close()
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._socket_path)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

"""File-descriptor-level capture of a step's stdout and stderr.

Replacing ``sys.stdout`` would miss C extensions and subprocesses, so for the duration of
a step fds 1 and 2 are pointed (``os.dup2``) at pipes; a reader thread per pipe turns the
bytes into chunks keyed by byte offset. Steps run one at a time on the main thread, so
one capture is active at a time. POSIX only (``select`` on pipes).

A step that prints without end is kept as head and tail rather than cut off: past
``head_bytes`` a stream's output is no longer sent but held in a rolling buffer of its
last ``tail_bytes``, sent when the step ends after a one-line marker saying how much was
omitted. Offsets count the bytes kept, so the stored log stays contiguous.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from collections.abc import Callable
from types import TracebackType

from tether.shared.wire.logs import LogStream

log = logging.getLogger(__name__)

#: Receives (stream, offset, data); may raise (e.g. the publisher failed).
ChunkSink = Callable[[LogStream, int, bytes], None]

_FDS = {LogStream.STDOUT: 1, LogStream.STDERR: 2}


class _PipeReader(threading.Thread):
    """Reads one pipe until EOF (or until told to stop) and hands out offset-keyed chunks."""

    def __init__(
        self,
        stream: LogStream,
        fd: int,
        sink: ChunkSink,
        chunk_bytes: int,
        linger: float,
        head_bytes: int = 0,
        tail_bytes: int = 0,
    ) -> None:
        super().__init__(name=f"capture-{stream}", daemon=True)
        self.stream = stream
        self._fd = fd
        self._sink = sink
        self._chunk_bytes = chunk_bytes
        self._linger = linger
        self._head = head_bytes
        self._tail_limit = tail_bytes
        self._tail = bytearray()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        #: Bytes handed to the sink (the next chunk's offset).
        self.offset = 0
        #: Bytes read from the pipe.
        self.read = 0
        #: Bytes dropped from the middle (known once the pipe is drained).
        self.omitted = 0
        self._spilling = False

    def _send(self, data: bytes | bytearray) -> None:
        if self.error is None:
            try:
                self._sink(self.stream, self.offset, bytes(data))
            except BaseException as err:  # noqa: BLE001 - reported by the capture's exit
                # Keep reading and dropping: if this thread stopped, the pipe would fill and
                # the user's next print would block forever.
                self.error = err
        self.offset += len(data)

    def _accept(self, data: bytes | bytearray) -> None:
        """Send what fits in the head; past it, keep only the last ``tail_bytes``."""
        self.read += len(data)
        if self._head <= 0:
            self._send(data)
            return
        if not self._spilling:
            room = self._head - self.offset
            if room > 0:
                self._send(data[:room])
                data = data[room:]
            self._spilling = bool(data)
        if data:
            self._tail += data
            # Trim in large steps so a long run of small writes stays linear.
            if len(self._tail) > 2 * self._tail_limit + self._chunk_bytes:
                del self._tail[: len(self._tail) - self._tail_limit]

    def _finish(self) -> None:
        """Send the marker and the tail, if the head filled up."""
        if not self._spilling:
            return
        tail = self._tail[-self._tail_limit :] if self._tail_limit > 0 else bytearray()
        omitted = self.read - self.offset - len(tail)
        self._tail = bytearray()
        self.omitted = omitted
        if omitted > 0:
            self._send(
                f"\n[tether: {omitted:,} bytes of {self.stream} omitted; kept the first "
                f"{self._head:,} and the last {len(tail):,} bytes]\n".encode()
            )
        for start in range(0, len(tail), self._chunk_bytes):
            self._send(tail[start : start + self._chunk_bytes])

    def run(self) -> None:
        buf = bytearray()
        try:
            while True:
                # Short waits while holding data (to batch small writes), longer otherwise,
                # so the stop flag is seen promptly either way.
                timeout = self._linger if buf else 0.1
                ready, _, _ = select.select([self._fd], [], [], timeout)
                eof = False
                if ready:
                    data = os.read(self._fd, self._chunk_bytes - len(buf))
                    eof = not data
                    buf += data
                if buf and (eof or not ready or len(buf) >= self._chunk_bytes):
                    self._accept(buf)
                    buf = bytearray()
                if eof or self.stop.is_set():
                    break
        finally:
            if buf:
                self._accept(buf)
            self._finish()
            os.close(self._fd)


class StepOutputCapture:
    """Context manager capturing fds 1 and 2 into chunks while a step runs.

    Everything written before ``__exit__`` returns has been handed to ``sink``, so the
    step's last output is published before its STEP_SUCCESS/STEP_FAILURE event.

    Args:
        sink: receives (stream, offset, data); offsets start at 0 per stream.
        chunk_bytes: largest chunk.
        linger: seconds to wait for more output before sending a partial chunk.
        drain_timeout: seconds to wait at exit for processes the step started that still
            hold the pipes (a background child); after that their output is not captured.
        head_bytes: bytes per stream sent as they come; 0 keeps everything.
        tail_bytes: bytes per stream kept from the end once the head is full.
    """

    def __init__(
        self,
        sink: ChunkSink,
        *,
        chunk_bytes: int = 64 * 1024,
        linger: float = 0.05,
        drain_timeout: float = 5.0,
        head_bytes: int = 0,
        tail_bytes: int = 0,
    ) -> None:
        self._sink = sink
        self._chunk_bytes = chunk_bytes
        self._linger = linger
        self._drain_timeout = drain_timeout
        self._head_bytes = head_bytes
        self._tail_bytes = tail_bytes
        self._saved: dict[LogStream, int] = {}
        self._readers: list[_PipeReader] = []

    def __enter__(self) -> StepOutputCapture:
        _flush_python_streams()
        for stream, fd in _FDS.items():
            read_fd, write_fd = os.pipe()
            self._saved[stream] = os.dup(fd)
            os.dup2(write_fd, fd)  # inheritable: subprocesses of the op write to the pipe too
            os.close(write_fd)
            reader = _PipeReader(
                stream,
                read_fd,
                self._sink,
                self._chunk_bytes,
                self._linger,
                self._head_bytes,
                self._tail_bytes,
            )
            reader.start()
            self._readers.append(reader)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _flush_python_streams()
        # Restoring fd 1/2 closes this process's write ends; readers then see EOF once
        # every child that inherited them has exited or closed them too.
        for stream, fd in _FDS.items():
            saved = self._saved.pop(stream, None)
            if saved is not None:
                os.dup2(saved, fd)
                os.close(saved)
        for reader in self._readers:
            reader.join(self._drain_timeout)
            if reader.is_alive():
                log.warning(
                    "a process started by the step still holds its %s; not capturing more",
                    reader.stream,
                )
                reader.stop.set()
                reader.join()

    @property
    def error(self) -> BaseException | None:
        """The first error the sink raised, if any (the chunks after it were dropped)."""
        for reader in self._readers:
            if reader.error is not None:
                return reader.error
        return None

    @property
    def bytes_captured(self) -> dict[LogStream, int]:
        """Bytes kept (sent to the sink) per stream: where the next attempt's offsets start."""
        return {reader.stream: reader.offset for reader in self._readers}

    @property
    def bytes_omitted(self) -> dict[LogStream, int]:
        """Bytes dropped from the middle per stream (0 unless the head filled up)."""
        return {reader.stream: reader.omitted for reader in self._readers}


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass

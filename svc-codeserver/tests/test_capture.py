"""Output capture at the file-descriptor level, and its head/tail cap for huge outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tether.codeserver.worker.capture import StepOutputCapture
from tether.shared.wire.logs import LogStream


class Sink:
    """Collects chunks and checks they are contiguous per stream."""

    def __init__(self) -> None:
        self.data: dict[LogStream, bytearray] = {}

    def __call__(self, stream: LogStream, offset: int, data: bytes) -> None:
        got = self.data.setdefault(stream, bytearray())
        assert offset == len(got), f"{stream}: chunk at {offset}, expected {len(got)}"
        assert data, "empty chunk"
        got += data


@pytest.mark.integration
def test_everything_printed_by_python_c_and_children_is_captured() -> None:
    sink = Sink()
    with StepOutputCapture(sink, chunk_bytes=1024) as capture:
        print("from python", file=sys.__stdout__, flush=True)  # pytest replaced sys.stdout
        os.write(1, b"from the fd\n")
        os.write(2, b"to stderr\n")
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    assert bytes(sink.data[LogStream.STDOUT]) == b"from python\nfrom the fd\nfrom a child\n"
    assert bytes(sink.data[LogStream.STDERR]) == b"to stderr\n"
    assert capture.bytes_omitted == {LogStream.STDOUT: 0, LogStream.STDERR: 0}


def test_huge_output_keeps_head_and_tail_with_a_marker() -> None:
    sink = Sink()
    lines = [f"line {i:07d}\n".encode() for i in range(200_000)]  # 2.6 MB
    total = sum(map(len, lines))
    with StepOutputCapture(sink, chunk_bytes=4096, head_bytes=100_000, tail_bytes=50_000) as cap:
        for line in lines:
            os.write(1, line)
        os.write(2, b"small stderr\n")
    out = bytes(sink.data[LogStream.STDOUT])
    everything = b"".join(lines)
    assert out.startswith(everything[:100_000])
    assert out.endswith(everything[-50_000:])
    omitted = total - 150_000
    marker = out[100_000 : len(out) - 50_000]
    assert (
        marker
        == (
            f"\n[tether: {omitted:,} bytes of stdout omitted; "
            f"kept the first 100,000 and the last 50,000 bytes]\n"
        ).encode()
    )
    assert cap.bytes_omitted[LogStream.STDOUT] == omitted
    assert cap.bytes_captured[LogStream.STDOUT] == len(out)
    # The other stream is under its cap: untouched.
    assert bytes(sink.data[LogStream.STDERR]) == b"small stderr\n"
    assert cap.bytes_omitted[LogStream.STDERR] == 0


def test_output_exactly_at_the_head_limit_is_not_marked() -> None:
    sink = Sink()
    with StepOutputCapture(sink, chunk_bytes=1024, head_bytes=3000, tail_bytes=100) as cap:
        os.write(1, b"x" * 3000)
    assert bytes(sink.data[LogStream.STDOUT]) == b"x" * 3000
    assert cap.bytes_omitted[LogStream.STDOUT] == 0

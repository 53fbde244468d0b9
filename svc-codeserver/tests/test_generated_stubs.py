"""The committed gRPC stubs must be exactly what the committed .proto generates."""

from __future__ import annotations

from pathlib import Path

import pytest
import tether.shared.grpc as grpc_pkg


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    from tether.shared.grpc.generate import generate

    generate(tmp_path)
    committed = Path(grpc_pkg.__file__).parent
    generated = tmp_path / "tether" / "shared" / "grpc"
    for name in ("codeserver_pb2.py", "codeserver_pb2.pyi", "codeserver_pb2_grpc.py"):
        assert (generated / name).read_text() == (committed / name).read_text(), (
            f"{name} is stale: run `uv run python -m tether.shared.grpc.generate`"
        )

"""Regenerate the committed gRPC stubs from ``codeserver.proto``.

Usage: ``python -m tether.shared.grpc.generate [OUT_DIR]`` (needs ``grpcio-tools``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC_ROOT = HERE.parents[2]  # .../shared/src
PROTO = "tether/shared/grpc/codeserver.proto"


def generate(out_dir: Path) -> None:
    """Write ``codeserver_pb2.py``, ``.pyi`` and ``_pb2_grpc.py`` under ``out_dir``."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{SRC_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            PROTO,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC_ROOT)

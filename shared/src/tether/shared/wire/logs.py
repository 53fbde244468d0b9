"""Raw stdout/stderr of runs: log chunks and the pointers to logs kept in object storage."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field
from tether.shared.wire.base import WireModel


class LogStream(StrEnum):
    """Which standard stream a compute-log chunk came from."""

    STDOUT = "stdout"
    STDERR = "stderr"


class LogChunk(WireModel):
    """Raw bytes of one step's stdout or stderr, starting at byte ``offset``.

    ``(run_id, step_key, stream, offset)`` is its natural key.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    type: Literal["tether.v1.log_chunk"] = "tether.v1.log_chunk"
    run_id: str
    step_key: str
    stream: LogStream
    offset: int = Field(ge=0)
    data: bytes = b""
    timestamp: float = Field(default_factory=time.time)


class ComputeLogPointer(WireModel):
    """Where bytes ``[offset, offset + length)`` of one step's stream are stored outside the
    control plane (the customer's own bucket); the control plane keeps only this pointer.

    ``(run_id, step_key, stream, offset)`` is its natural key, as for a LogChunk.
    """

    type: Literal["tether.v1.compute_log_pointer"] = "tether.v1.compute_log_pointer"
    run_id: str
    step_key: str = Field(max_length=200)
    stream: LogStream
    offset: int = Field(ge=0)
    length: int = Field(ge=1, description="Bytes in the object.")
    storage: Literal["s3"] = Field(default="s3", description="Kind of storage holding it.")
    bucket: str = Field(min_length=1, max_length=255)
    key: str = Field(min_length=1, max_length=1024, description="Object key in the bucket.")
    timestamp: float = Field(default_factory=time.time)


#: Digits of the offsets in compute-log object keys: keys sort by offset; 16 digits hold 9 PB.
LOG_OBJECT_OFFSET_DIGITS = 16


def compute_log_key_suffix(
    run_id: str, step_key: str, stream: LogStream | str, offset: int, end: int
) -> str:
    """How the key of the object holding bytes ``[offset, end)`` of one step's stream ends
    (after the storage's own prefix). A key is bound to its run, step, stream and bytes: a
    pointer naming any other key is refused, and only such keys are ever presigned."""
    digits = LOG_OBJECT_OFFSET_DIGITS
    return f"{run_id}/{step_key}/{stream}/{offset:0{digits}d}-{end:0{digits}d}"

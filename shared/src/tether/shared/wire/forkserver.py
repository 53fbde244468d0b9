"""The fork-server protocol: how a launcher asks a warm process to fork a run worker.

A fork server (process substrate only) has imported the SDK and one code location's code
and listens on a Unix socket. Each connection carries one run, as length-prefixed JSON
frames (4-byte big-endian length, then the JSON of a typed model):

1. launcher -> fork server: :class:`ForkRequest` (the ExecuteRunArgs of the cold path and
   the extra environment, TRACEPARENT included);
2. fork server -> launcher: :class:`ForkStarted` (the child's pid, also its process group
   id) or :class:`ForkRefused` (the launcher then spawns the cold run worker);
3. fork server or child -> launcher: :class:`ForkExited` once the child has ended. The
   child writes it itself just before it exits, and the fork server writes it again when
   it reaps the child (covering crashes): the first one counts. Because the child holds
   the connection too, the launcher learns the exit code even when the fork server died
   in between; an EOF without a ForkExited means the exit code is unknown.

Pure codecs, no I/O. A location opts out of warm starts with ``TETHER_WARM_START=0`` in
its ``env``.
"""

from __future__ import annotations

import struct
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError
from tether.shared.wire.base import WireModel
from tether.shared.wire.errors import ContractError
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs

__all__ = [
    "FRAME_HEADER",
    "MAX_FRAME_BYTES",
    "WARM_START_ENV",
    "ForkExited",
    "ForkRefused",
    "ForkReply",
    "ForkRequest",
    "ForkServerReady",
    "ForkStarted",
    "decode_frame_length",
    "decode_reply",
    "decode_request",
    "encode_frame",
    "warm_start_allowed",
]

#: Length prefix of every frame.
FRAME_HEADER = struct.Struct(">I")
#: Largest frame accepted (run config travels inside ExecuteRunArgs).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Set to "0"/"false" in a location's ``env`` to always start its runs cold.
WARM_START_ENV = "TETHER_WARM_START"


class ForkServerReady(WireModel):
    """The one stdout line a fork server prints once it accepts fork requests."""

    type: Literal["tether.v1.fork_server_ready"] = "tether.v1.fork_server_ready"
    socket_path: str = Field(description="Unix socket the fork server listens on.")
    pid: int
    location_loaded: bool = Field(description="Whether the location's code imported cleanly.")


class ForkRequest(WireModel):
    """Fork a run worker for one run."""

    type: Literal["tether.v1.fork_request"] = "tether.v1.fork_request"
    args: ExecuteRunArgs = Field(description="Exactly what the cold run worker would get.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the run worker (TRACEPARENT)."
    )


class ForkStarted(WireModel):
    """The child runs; it leads its own session, so its pid is also its process group."""

    type: Literal["tether.v1.fork_started"] = "tether.v1.fork_started"
    pid: int


class ForkRefused(WireModel):
    """No child was started (stale code, another location...): start the run cold."""

    type: Literal["tether.v1.fork_refused"] = "tether.v1.fork_refused"
    reason: str


class ForkExited(WireModel):
    """The child ended; ``exit_code`` as ``subprocess`` reports it (-N: killed by signal N)."""

    type: Literal["tether.v1.fork_exited"] = "tether.v1.fork_exited"
    pid: int
    exit_code: int


ForkReply = Annotated[ForkStarted | ForkRefused | ForkExited, Field(discriminator="type")]
_REPLY: TypeAdapter[ForkStarted | ForkRefused | ForkExited] = TypeAdapter(ForkReply)


def encode_frame(message: WireModel) -> bytes:
    """One frame: the length prefix and the message's JSON.

    Raises:
        ContractError: the message is larger than :data:`MAX_FRAME_BYTES`.
    """
    body = message.model_dump_json().encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ContractError(f"{type(message).__name__} of {len(body)} bytes is too large")
    return FRAME_HEADER.pack(len(body)) + body


def decode_frame_length(header: bytes) -> int:
    """The body length announced by a frame header.

    Raises:
        ContractError: the header is short or announces more than :data:`MAX_FRAME_BYTES`.
    """
    if len(header) != FRAME_HEADER.size:
        raise ContractError(f"truncated frame header ({len(header)} bytes)")
    length: int
    (length,) = FRAME_HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ContractError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return length


def decode_request(body: bytes) -> ForkRequest:
    """Parse a request body; raise ContractError when malformed."""
    try:
        return ForkRequest.model_validate_json(body)
    except ValidationError as err:
        raise ContractError(f"malformed ForkRequest: {err}") from err


def decode_reply(body: bytes) -> ForkStarted | ForkRefused | ForkExited:
    """Parse a reply body; raise ContractError when malformed."""
    try:
        return _REPLY.validate_json(body)
    except ValidationError as err:
        raise ContractError(f"malformed fork-server reply: {err}") from err


def warm_start_allowed(location: LocationConfig) -> bool:
    """Whether ``location`` lets its runs be forked from a warm process."""
    value = location.env.get(WARM_START_ENV, "1").strip().lower()
    return value not in ("0", "false", "no", "off")

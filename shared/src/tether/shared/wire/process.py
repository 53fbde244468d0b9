"""Process-level messages between a launcher and the processes it starts (argv, readiness)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from tether.shared.wire.base import WireModel
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import LaunchRunPayload


class ExecuteRunArgs(WireModel):
    """Everything ``tether api execute-run`` needs, passed as one JSON argument."""

    type: Literal["tether.v1.execute_run_args"] = "tether.v1.execute_run_args"
    location: LocationConfig
    run: LaunchRunPayload
    nats_url: str
    traceparent: str | None = None


class CodeServerReady(WireModel):
    """The first stdout line of a code server process once its port is bound."""

    type: Literal["tether.v1.codeserver_ready"] = "tether.v1.codeserver_ready"
    address: str = Field(description="host:port the gRPC server listens on.")
    pid: int

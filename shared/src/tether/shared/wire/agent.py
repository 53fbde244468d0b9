"""What an agent reports about itself: service and code-server statuses, the heartbeat."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field
from tether.shared.wire.base import WireModel


class CodeServerStatus(WireModel):
    """What a launcher reports of one code server in a heartbeat."""

    location_name: str
    state: str = Field(description="STARTING, RUNNING, FAILED or STOPPED.")
    address: str | None = None
    pid: int | None = None
    error: str | None = None


class ServiceStatus(WireModel):
    """What one agent service process reports of itself (kept in a NATS KV bucket).

    The poller gathers these into the agent's heartbeat; an entry that is not refreshed
    expires with the bucket's TTL, so a dead process disappears on its own.
    """

    type: Literal["tether.v1.service_status"] = "tether.v1.service_status"
    service: str = Field(description="poller, launcher-process, eventrelay, logship, ...")
    instance: str = Field(description="host and pid of the process, unique among replicas")
    state: str = Field(description="RUNNING, DEGRADED or STOPPED.")
    started_at: float
    code_servers: list[CodeServerStatus] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="recent errors, newest last")
    timestamp: float = Field(default_factory=time.time)

    @property
    def key(self) -> str:
        """The entry's key in the status bucket: ``<service>.<instance>``."""
        return f"{self.service}.{self.instance}"


class Heartbeat(WireModel):
    """An agent's periodic report of its services and code servers."""

    type: Literal["tether.v1.heartbeat"] = "tether.v1.heartbeat"
    agent_id: str
    services: dict[str, str] = Field(
        default_factory=dict, description="'service/instance' -> state"
    )
    code_servers: list[CodeServerStatus] = Field(default_factory=list)
    queues: dict[str, int] = Field(
        default_factory=dict, description="stream -> messages not yet consumed"
    )
    errors: list[str] = Field(default_factory=list)
    timestamp: float = Field(default_factory=time.time)

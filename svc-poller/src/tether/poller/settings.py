"""Settings of the poller (env prefix ``TETHER_POLLER_``; shared fields also ``TETHER_*``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from tether.shared.runtime.settings import AgentSettings, comma_or_json_list
from tether.shared.wire.locations import DEFAULT_AGENT_QUEUE, check_agent_queue


class PollerSettings(AgentSettings):
    """How the poller claims work from the control plane and republishes it on NATS."""

    model_config = SettingsConfigDict(env_prefix="TETHER_POLLER_")

    substrates: list[str] = Field(
        default_factory=lambda: ["process"],
        description="Launcher substrates this agent serves; only their work items are claimed.",
    )
    queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_AGENT_QUEUE],
        min_length=1,
        description=(
            "Agent queues this poller claims from: only work of locations whose "
            "agent_queue is one of them (their runs' control items included)."
        ),
    )
    max_items: int = Field(default=10, ge=1, description="Most work items leased per claim.")
    claim_wait_s: float = Field(
        default=10.0, ge=0, description="How long one claimWork long-poll may wait for work."
    )
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="Lease of claimed items; unacked items are offered again after it.",
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between heartbeats to the control plane."
    )
    publish_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds to wait for JetStream's PubAck of one item."
    )
    api_retry_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds one agent-API call retries transient failures before giving up.",
    )
    pause_claims_at: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description=(
            "Fullness (stored bytes over max_bytes) of the work or events stream at which "
            "the poller stops claiming new work until it drains below."
        ),
    )
    backoff_initial_s: float = Field(
        default=1.0, gt=0, description="First pause of the claim loop after a failed cycle."
    )
    backoff_max_s: float = Field(
        default=30.0, gt=0, description="Longest pause of the claim loop between failed cycles."
    )

    _split_queues = field_validator("queues", mode="before")(comma_or_json_list)

    @field_validator("queues")
    @classmethod
    def _valid_queues(cls, value: list[str]) -> list[str]:
        return [check_agent_queue(name) for name in value]

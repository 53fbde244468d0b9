"""Settings of the poller (env prefix ``TETHER_POLLER_``; shared fields also ``TETHER_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tether.shared.runtime.settings import AgentSettings


class PollerSettings(AgentSettings):
    """How the poller claims work from the control plane and republishes it on NATS."""

    model_config = SettingsConfigDict(env_prefix="TETHER_POLLER_")

    substrates: list[str] = Field(
        default_factory=lambda: ["process"],
        description="Launcher substrates this agent serves; only their work items are claimed.",
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
    backoff_initial_s: float = Field(
        default=1.0, gt=0, description="First pause of the claim loop after a failed cycle."
    )
    backoff_max_s: float = Field(
        default=30.0, gt=0, description="Longest pause of the claim loop between failed cycles."
    )

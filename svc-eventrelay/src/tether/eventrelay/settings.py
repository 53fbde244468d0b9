"""Settings of the eventrelay."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tether.shared.nats.relay import BatchPolicy
from tether.shared.runtime.settings import AgentSettings


class EventRelaySettings(AgentSettings):
    """Environment: ``TETHER_EVENTRELAY_*`` (shared agent fields also as ``TETHER_*``)."""

    model_config = SettingsConfigDict(env_prefix="TETHER_EVENTRELAY_", extra="ignore")

    batch_max_count: int = Field(default=500, description="Most messages per upload.")
    batch_max_bytes: int = Field(default=4 << 20, description="Most body bytes per upload.")
    batch_max_wait_s: float = Field(
        default=0.1, description="Longest a lone message waits before it is uploaded."
    )
    ack_wait_s: float = Field(
        default=4.0,
        gt=0,
        description=(
            "Seconds before a message fetched by a relay that died is redelivered (messages "
            "being uploaded are kept in progress meanwhile)."
        ),
    )
    max_backoff_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Longest wait between attempts of a failing upload (so a control plane that "
            "comes back is used within about this long)."
        ),
    )

    def batch_policy(self) -> BatchPolicy:
        """The BatchPolicy these settings describe."""
        return BatchPolicy(
            max_count=self.batch_max_count,
            max_bytes=self.batch_max_bytes,
            max_wait_s=self.batch_max_wait_s,
            ack_wait_s=self.ack_wait_s,
            max_backoff_s=self.max_backoff_s,
        )

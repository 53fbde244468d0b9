"""Settings of the logship."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tether.shared.relay import BatchPolicy
from tether.shared.settings import AgentSettings


class LogShipSettings(AgentSettings):
    """Environment: ``TETHER_LOGSHIP_*`` (shared agent fields also as ``TETHER_*``)."""

    model_config = SettingsConfigDict(env_prefix="TETHER_LOGSHIP_", extra="ignore")

    batch_max_count: int = Field(default=256, description="Most chunks per upload.")
    batch_max_bytes: int = Field(default=8 << 20, description="Most log bytes per upload.")
    batch_max_wait_s: float = Field(
        default=0.1, description="Longest a lone chunk waits before it is uploaded."
    )
    ack_wait_s: float = Field(
        default=60.0, description="Seconds before an unacked chunk is redelivered."
    )

    def batch_policy(self) -> BatchPolicy:
        """The BatchPolicy these settings describe."""
        return BatchPolicy(
            max_count=self.batch_max_count,
            max_bytes=self.batch_max_bytes,
            max_wait_s=self.batch_max_wait_s,
            ack_wait_s=self.ack_wait_s,
        )

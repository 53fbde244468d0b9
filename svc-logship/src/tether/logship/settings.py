"""Settings of the logship."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict
from tether.shared.nats.relay import BatchPolicy
from tether.shared.runtime.settings import AgentSettings


class LogShipSettings(AgentSettings):
    """Environment: ``TETHER_LOGSHIP_*`` (shared agent fields also as ``TETHER_*``).

    S3 credentials are not settings: boto3's standard chain finds them (environment,
    shared config/credentials files, web identity, container or instance roles).
    """

    model_config = SettingsConfigDict(env_prefix="TETHER_LOGSHIP_", extra="ignore")

    batch_max_count: int = Field(default=256, description="Most chunks per upload.")
    batch_max_bytes: int = Field(
        default=8 << 20, description="Most log bytes per upload (and per object)."
    )
    batch_max_wait_s: float = Field(
        default=0.1, description="Longest a lone chunk waits before it is uploaded."
    )
    ack_wait_s: float = Field(
        default=4.0,
        gt=0,
        description=(
            "Seconds before a chunk fetched by a logship that died is redelivered (chunks "
            "being uploaded are kept in progress meanwhile)."
        ),
    )
    max_backoff_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest wait between attempts of a failing upload.",
    )
    sink: Literal["controlplane", "s3"] = Field(
        default="controlplane",
        description=(
            "Where compute-log bytes go: 'controlplane' (appendComputeLogs) or 's3' (objects "
            "in s3_bucket; the control plane gets only pointers to them)."
        ),
    )
    s3_bucket: str | None = Field(
        default=None,
        description=(
            "Bucket of the compute logs (required when sink is 's3'; when set in "
            "'controlplane' mode, logs stored there earlier can still be presigned)."
        ),
    )
    s3_prefix: str = Field(
        default="tether/compute-logs/", description="Key prefix of every compute-log object."
    )
    s3_region: str | None = Field(
        default=None, description="AWS region of the bucket (None: boto3's configured default)."
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint for S3-compatible storage (MinIO, moto); None: AWS.",
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        default=None,
        description="Bucket addressing; None: 'path' with an endpoint_url, else 'auto'.",
    )
    s3_max_concurrency: int = Field(
        default=8, ge=1, description="Most S3 requests in flight (each runs in a thread)."
    )
    s3_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds to connect to S3 before a request fails."
    )
    s3_read_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds to wait for an S3 answer before it fails."
    )
    s3_max_attempts: int = Field(
        default=3,
        ge=1,
        description=(
            "Attempts of one S3 request inside boto3; after them the whole batch is retried "
            "later (its messages stay unacked, nothing is lost)."
        ),
    )
    presign_expiry_s: int = Field(
        default=900,
        ge=1,
        le=7 * 24 * 3600,
        description=(
            "Lifetime of the presigned GET URLs the UI and API show (seconds; at most 7 days)."
        ),
    )

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> LogShipSettings:
        if self.sink == "s3" and not self.s3_bucket:
            raise ValueError("TETHER_LOGSHIP_S3_BUCKET is required when TETHER_LOGSHIP_SINK=s3")
        if self.s3_prefix.startswith("/"):
            raise ValueError("TETHER_LOGSHIP_S3_PREFIX must not start with '/'")
        return self

    def batch_policy(self) -> BatchPolicy:
        """The BatchPolicy these settings describe."""
        return BatchPolicy(
            max_count=self.batch_max_count,
            max_bytes=self.batch_max_bytes,
            max_wait_s=self.batch_max_wait_s,
            ack_wait_s=self.ack_wait_s,
            max_backoff_s=self.max_backoff_s,
        )

"""Settings of the run worker (``tether api execute-run``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RunWorkerSettings(BaseSettings):
    """Tuning of one run worker process; the run itself comes from ExecuteRunArgs."""

    model_config = SettingsConfigDict(env_prefix="TETHER_RUN_WORKER_", extra="ignore")

    nats_credentials: SecretStr | None = Field(
        default=None,
        description="The run's own NATS user credentials (.creds text, minted by the "
        "launcher for this run: it may publish only this run's events and logs); passed "
        "in the environment, never argv, read once and removed from it, so processes the "
        "op starts do not inherit it. Unset: connect without credentials.",
    )
    interrupt_after_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after a first SIGTERM/SIGINT (start no further op) at which the "
        "running op is interrupted as if a second one came (RunInterrupted raised in it, so "
        "its cleanup runs). The launcher sets half its grace period. Unset: only a second "
        "signal interrupts.",
    )
    nats_connect_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to keep trying the first NATS connection."
    )
    publish_retry_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds one message may be retried (stream not declared yet, NATS down).",
    )
    publish_ack_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for one PubAck before retrying."
    )
    publish_queue_size: int = Field(
        default=256,
        ge=1,
        description="Messages buffered before user code is slowed down (backpressure).",
    )
    log_chunk_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest stdout/stderr chunk published at once."
    )
    log_linger: float = Field(
        default=0.05, ge=0, description="Seconds to wait for more output before sending a chunk."
    )
    log_head_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Bytes of each step's stdout (and of its stderr) published as they come; "
        "past them only the last log_tail_bytes are kept, published when the step ends after "
        "a line saying how much was omitted. 0: keep everything.",
    )
    log_tail_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description="Bytes kept from the end of a step's stream once log_head_bytes is reached.",
    )
    capture_drain_timeout: float = Field(
        default=5.0,
        ge=0,
        description="Seconds to wait at step end for processes the op left holding its output.",
    )
    storage_dir: str = Field(
        default=".tether/storage",
        description="Base directory of step outputs, kept per run and step as "
        "<dir>/<run_id>/<step>/<output>.pickle so a re-execution from failure can reuse "
        "them (relative: to the worker's working directory, the location's). They stay in "
        "this environment and are never removed by Tether: prune old runs' directories.",
    )
    run_storage_dir: str | None = Field(
        default=None,
        description="Directory under which the multiprocess executor keeps each run's "
        "scratch files (step specs, removed after the run); default: the system temp "
        "directory.",
    )
    step_terminate_grace: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a canceled run's step processes get after SIGTERM before SIGKILL "
        "(multiprocess executor).",
    )
    log_level: str = Field(default="INFO", description="Level of the worker's own logs.")

"""Settings of the ECS substrate (env prefix ``TETHER_LAUNCHER_ECS_``).

A field of :class:`tether.launcher.settings.LauncherSettings` (``settings.ecs``), read from
the environment when the launcher's settings are built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from tether.shared.runtime.settings import comma_or_json_list


class EcsSettings(BaseSettings):
    """Where and how the ECS substrate runs code servers (services) and runs (tasks).

    A location's ``ecs`` settings (``EcsConfig``) override the task-level defaults here.
    """

    model_config = SettingsConfigDict(env_prefix="TETHER_LAUNCHER_ECS_", extra="ignore")

    cluster: str = Field(default="default", description="ECS cluster (name or ARN).")
    region: str | None = Field(
        default=None, description="AWS region; unset: AWS_REGION / AWS_DEFAULT_REGION / config."
    )
    endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of every AWS API called (ECS, Cloud Map); for tests (moto).",
    )
    image: str | None = Field(default=None, description="Image of locations that name none.")
    launch_type: Literal["FARGATE", "EC2"] = Field(
        default="FARGATE", description="Launch type of services and tasks."
    )
    subnets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="awsvpc subnets of tasks (comma-separated); a location may set its own.",
    )
    security_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Security groups of tasks (comma-separated); the code servers' group should "
            "allow the code-server port from the launcher only."
        ),
    )
    assign_public_ip: bool = Field(
        default=False,
        description="Give tasks a public IP (public subnets without a NAT gateway need it).",
    )
    namespace: str = Field(
        default="tether.local",
        description="Cloud Map private DNS namespace code servers are registered in.",
    )
    vpc_id: str | None = Field(
        default=None,
        description="VPC to create the namespace in when it does not exist; unset: it must exist.",
    )
    task_role_arn: str | None = Field(
        default=None, description="IAM role user code runs as (tasks' taskRoleArn)."
    )
    execution_role_arn: str | None = Field(
        default=None,
        description="IAM role ECS pulls images and writes logs with (executionRoleArn).",
    )
    cpu: str = Field(default="512", description="Task CPU units of locations that set none.")
    memory: str = Field(default="1024", description="Task memory (MiB) of locations that set none.")
    log_group: str | None = Field(
        default=None,
        description="CloudWatch Logs group of the awslogs driver; unset: no log configuration.",
    )
    log_stream_prefix: str = Field(
        default="tether", description="awslogs stream prefix (streams: prefix/container/task)."
    )
    code_server_port: int = Field(
        default=4000, ge=1, le=65535, description="Port code servers listen on in their task."
    )
    health_interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between reads of a code server's service."
    )
    poll_interval_s: float = Field(
        default=2.0, gt=0, description="Seconds between reads while waiting for a service or task."
    )

    # The environment gives "a,b" (or a JSON list); code gives lists.
    _split = field_validator("subnets", "security_groups", mode="before")(comma_or_json_list)

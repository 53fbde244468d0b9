"""What alerts are made of: policy kinds, channel configurations, the message sent.

A channel's configuration is one pydantic model per channel type; its :class:`SecretStr`
fields (webhook URLs, SMTP password, HMAC secret, PagerDuty routing key) are its
write-only part: stored apart (``alert_policies.channel_secret``) and never returned by
the API, which shows only :func:`secret_hint` of them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)


class PolicyKind(StrEnum):
    """What a policy alerts on."""

    RUN_FAILURE = "RUN_FAILURE"
    RUN_SUCCESS = "RUN_SUCCESS"
    #: A run still running ``threshold`` seconds after it started.
    RUN_LONG_RUNNING = "RUN_LONG_RUNNING"
    #: A run the run monitor failed (start timeout, worker lost, max runtime exceeded).
    RUN_STOPPED_BY_MONITOR = "RUN_STOPPED_BY_MONITOR"
    TICK_FAILURE = "TICK_FAILURE"
    LOCATION_LOAD_ERROR = "LOCATION_LOAD_ERROR"
    #: No heartbeat of an agent for ``threshold`` seconds (and once more when it is back).
    AGENT_OFFLINE = "AGENT_OFFLINE"
    #: A JetStream stream of an agent holding more than ``threshold`` messages (and once
    #: more when it is back under).
    BACKLOG = "BACKLOG"
    #: A step that materializes an asset failed.
    ASSET_FAILURE = "ASSET_FAILURE"

    @property
    def needs_threshold(self) -> bool:
        """Whether a policy of this kind must set ``threshold``."""
        return self in _THRESHOLD_KINDS


_THRESHOLD_KINDS = frozenset(
    {PolicyKind.RUN_LONG_RUNNING, PolicyKind.AGENT_OFFLINE, PolicyKind.BACKLOG}
)


class AlertEvent(StrEnum):
    """What one alert says happened (a policy kind may raise two: a problem and its end)."""

    RUN_FAILURE = "RUN_FAILURE"
    RUN_SUCCESS = "RUN_SUCCESS"
    RUN_LONG_RUNNING = "RUN_LONG_RUNNING"
    RUN_STOPPED_BY_MONITOR = "RUN_STOPPED_BY_MONITOR"
    TICK_FAILURE = "TICK_FAILURE"
    LOCATION_LOAD_ERROR = "LOCATION_LOAD_ERROR"
    AGENT_OFFLINE = "AGENT_OFFLINE"
    AGENT_BACK = "AGENT_BACK"
    BACKLOG_HIGH = "BACKLOG_HIGH"
    BACKLOG_OK = "BACKLOG_OK"
    ASSET_FAILURE = "ASSET_FAILURE"
    TEST = "TEST"

    @property
    def resolves(self) -> bool:
        """Whether this event ends a problem an earlier alert raised (PagerDuty: resolve)."""
        return self in (AlertEvent.AGENT_BACK, AlertEvent.BACKLOG_OK)


class DeliveryStatus(StrEnum):
    """Where the delivery of one alert is: PENDING -> SENT, or -> RETRYING -> ... -> SENT
    | FAILED (attempts exhausted, or the receiver refused it for good)."""

    PENDING = "PENDING"
    RETRYING = "RETRYING"
    SENT = "SENT"
    FAILED = "FAILED"


class PolicyFilters(BaseModel):
    """Which events of its kind a policy alerts on (unset: all)."""

    model_config = ConfigDict(extra="forbid")

    job_name: str | None = Field(default=None, description="Runs of this job only.")
    location_name: str | None = Field(
        default=None, description="Runs, ticks, locations or assets of this location only."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Runs carrying every one of these tags only."
    )
    instigator_name: str | None = Field(
        default=None, description="Ticks of this schedule or sensor only."
    )
    agent_id: str | None = Field(default=None, description="This agent only.")
    asset_key: str | None = Field(
        default=None, description="This asset only (its key's user string, a/b)."
    )


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _http_url(value: SecretStr) -> SecretStr:
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL")
    return value


class WebhookChannel(_Channel):
    """A generic webhook: a JSON POST (see README: Alerts) signed with HMAC-SHA256."""

    type: Literal["webhook"] = "webhook"
    url: SecretStr
    secret: SecretStr = Field(min_length=16, description="HMAC-SHA256 key of the signature.")

    _check_url = field_validator("url")(_http_url)


class SlackChannel(_Channel):
    """A Slack (or Slack-compatible: Mattermost, Rocket.Chat) incoming webhook."""

    type: Literal["slack"] = "slack"
    url: SecretStr

    _check_url = field_validator("url")(_http_url)


class TeamsChannel(_Channel):
    """A Microsoft Teams incoming webhook (Workflows), sent an Adaptive Card."""

    type: Literal["teams"] = "teams"
    url: SecretStr

    _check_url = field_validator("url")(_http_url)


class EmailChannel(_Channel):
    """E-mail over SMTP."""

    type: Literal["email"] = "email"
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="STARTTLS (587), implicit TLS (465) or plain."
    )
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(min_length=3)
    recipients: list[str] = Field(min_length=1)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if any(c.isspace() or c in "/@?#" for c in value):
            raise ValueError("must be a host name or address")
        return value

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> EmailChannel:
        if self.security == "none" and self.password is not None:
            raise ValueError("a password must not travel in clear: use starttls or ssl")
        return self

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address or any(c in address for c in "\r\n,;"):
                raise ValueError(f"not an e-mail address: {address!r}")
        return value


class PagerDutyChannel(_Channel):
    """PagerDuty Events API v2 (``trigger``, and ``resolve`` when a problem ends)."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretStr
    url: str = Field(default="https://events.pagerduty.com/v2/enqueue")

    @field_validator("url")
    @classmethod
    def _events_url(cls, value: str) -> str:
        _http_url(SecretStr(value))
        return value

    severity: Literal["critical", "error", "warning", "info"] = "error"


def destination_host(
    channel: WebhookChannel | SlackChannel | TeamsChannel | EmailChannel | PagerDutyChannel,
) -> str:
    """The host a channel connects to (a name or an address)."""
    if isinstance(channel, EmailChannel):
        return channel.host
    url = channel.url if isinstance(channel, PagerDutyChannel) else channel.url.get_secret_value()
    return urlsplit(url).hostname or ""


Channel = Annotated[
    WebhookChannel | SlackChannel | TeamsChannel | EmailChannel | PagerDutyChannel,
    Field(discriminator="type"),
]
CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)
CHANNEL_TYPES = ("webhook", "slack", "teams", "email", "pagerduty")


def secret_fields(channel_type: type[BaseModel]) -> list[str]:
    """The write-only fields of a channel model (its ``SecretStr`` ones)."""
    return [n for n, f in channel_type.model_fields.items() if "SecretStr" in repr(f.annotation)]


def split_channel(channel: Channel) -> tuple[dict[str, Any], dict[str, str]]:
    """The channel's readable configuration and its write-only secrets, for storage."""
    secrets = secret_fields(type(channel))
    config = channel.model_dump(mode="json", exclude=set(secrets))
    secret: dict[str, str] = {}
    for name in secrets:
        value = getattr(channel, name)
        if isinstance(value, SecretStr):
            secret[name] = value.get_secret_value()
    return config, secret


def join_channel(config: dict[str, Any], secret: dict[str, str]) -> Channel:
    """The channel stored as ``config`` and ``secret``."""
    return CHANNEL.validate_python({**config, **secret})


def secret_hint(name: str, value: str) -> str:
    """What the API shows of a secret: a URL's scheme and host, else its last 4 characters
    (of a long enough secret), never enough to use it."""
    if name == "url":
        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.hostname}/…"
    return f"…{value[-4:]}" if len(value) >= 16 else "…"


class AlertMessage(BaseModel):
    """One alert as channels render it."""

    delivery_id: int
    deployment_id: str
    policy_id: str
    policy_name: str
    policy_kind: str
    event: AlertEvent
    event_key: str
    subject: str
    title: str
    text: str
    link: str | None
    details: dict[str, Any]
    created_at: float
    attempt: int

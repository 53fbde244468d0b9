"""Alert policies and their delivery log: list them (viewers), create, update, delete and
test them (editors and admins), in the caller's deployment.

A channel is one JSON object, ``{"type": "webhook" | "slack" | "teams" | "email" |
"pagerduty", ...}`` (the fields of :mod:`tether.controlplane.alerts.model`'s channel
models). Its secrets are write-only: a policy shows ``channel`` without them and
``channelSecrets`` with a hint of each (a URL's host, a key's last 4 characters); an
update that names a channel of the same type keeps the secrets it leaves out.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import strawberry
from pydantic import ValidationError
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.alerts import store
from tether.controlplane.alerts.daemon import DeliveryOptions, deliver_once
from tether.controlplane.alerts.egress import EgressGuard, EgressRefusedError
from tether.controlplane.alerts.model import (
    CHANNEL,
    AlertEvent,
    Channel,
    DeliveryStatus,
    PolicyFilters,
    PolicyKind,
    destination_host,
    secret_hint,
    split_channel,
)
from tether.controlplane.api.context import ApiContext
from tether.controlplane.db.models import AlertDelivery, AlertPolicy
from tether.controlplane.errors import BadInputError, describe_validation_error

PolicyKindEnum = strawberry.enum(
    PolicyKind, name="AlertPolicyKind", description="What an alert policy alerts on."
)
DeliveryStatusEnum = strawberry.enum(
    DeliveryStatus, name="AlertDeliveryStatus", description="Where an alert's delivery is."
)
#: Most rows one page of the delivery log holds.
MAX_DELIVERIES = 500


@strawberry.type(name="AlertPolicy", description="What to alert on, and where to send it.")
class AlertPolicyType:
    """A policy as the API shows it (never its channel's secrets)."""

    id: str
    name: str
    kind: PolicyKindEnum  # type: ignore[valid-type]
    enabled: bool
    filters: JSON = strawberry.field(
        description="jobName/locationName/tags/instigatorName/agentId/assetKey set on it."
    )
    threshold: float | None = strawberry.field(
        description="Seconds (RUN_LONG_RUNNING, AGENT_OFFLINE) or messages (BACKLOG)."
    )
    channel_type: str
    channel: JSON = strawberry.field(description="The channel without its secrets.")
    channel_secrets: JSON = strawberry.field(
        description="A hint of each secret set (a URL's host, a key's last 4 characters)."
    )
    rate_limit_per_minute: int
    created_at: float
    updated_at: float

    @classmethod
    def build(cls, row: AlertPolicy) -> AlertPolicyType:
        """Build from a row."""
        return cls(
            id=row.id,
            name=row.name,
            kind=PolicyKind(row.kind),
            enabled=row.enabled,
            filters=JSON(_camel(row.filters)),
            threshold=row.threshold,
            channel_type=row.channel_type,
            channel=JSON(row.channel_config),
            channel_secrets=JSON({k: secret_hint(k, v) for k, v in row.channel_secret.items()}),
            rate_limit_per_minute=row.rate_limit_per_minute,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type(name="AlertDelivery", description="One alert of a policy, and its delivery.")
class AlertDeliveryType:
    """A row of the delivery log."""

    id: int
    policy_id: str
    event: str
    event_key: str
    subject: str
    title: str
    text: str
    link: str | None
    status: DeliveryStatusEnum  # type: ignore[valid-type]
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    attempts_log: JSON = strawberry.field(description="Each attempt: {at, ok, error}.")
    created_at: float
    sent_at: float | None

    @classmethod
    def build(cls, row: AlertDelivery) -> AlertDeliveryType:
        """Build from a row."""
        return cls(
            id=row.id,
            policy_id=row.policy_id,
            event=row.event,
            event_key=row.event_key,
            subject=row.subject,
            title=row.title,
            text=row.body,
            link=row.link,
            status=DeliveryStatus(row.status),
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            attempts_log=JSON(row.attempts_log),
            created_at=row.created_at,
            sent_at=row.sent_at,
        )


_FILTER_NAMES = {
    "jobName": "job_name",
    "locationName": "location_name",
    "tags": "tags",
    "instigatorName": "instigator_name",
    "agentId": "agent_id",
    "assetKey": "asset_key",
}


def _camel(filters: dict[str, Any]) -> dict[str, Any]:
    back = {v: k for k, v in _FILTER_NAMES.items()}
    return {back.get(k, k): v for k, v in filters.items()}


def _filters(value: Any) -> PolicyFilters:
    if value is None:
        return PolicyFilters()
    if not isinstance(value, dict):
        raise BadInputError("filters: must be an object")
    _no_nul("filters", value)
    unknown = sorted(set(value) - set(_FILTER_NAMES))
    if unknown:
        raise BadInputError(
            f"filters: unknown {', '.join(unknown)} (known: {', '.join(_FILTER_NAMES)})"
        )
    try:
        return PolicyFilters.model_validate({_FILTER_NAMES[k]: v for k, v in value.items()})
    except ValidationError as err:
        raise BadInputError(f"filters: {describe_validation_error(err)}") from None


def _no_nul(what: str, value: Any) -> None:
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail the insert.
    if "\\u0000" in json.dumps(value):
        raise BadInputError(f"{what}: must not contain NUL characters")


def _channel(value: Any, guard: EgressGuard, keep: AlertPolicy | None = None) -> Channel:
    if not isinstance(value, dict):
        raise BadInputError("channel: must be an object with a type")
    _no_nul("channel", value)
    if keep is not None and value.get("type") == keep.channel_type:
        # Secrets left out of an update of the same channel type stay as they were.
        value = {**keep.channel_secret, **value}
    try:
        channel = CHANNEL.validate_python(value)
    except ValidationError as err:
        raise BadInputError(f"channel: {describe_validation_error(err)}") from None
    try:
        # An address the guard refuses is refused now; a name, when it is used.
        guard.check_literal(destination_host(channel))
    except EgressRefusedError as err:
        raise BadInputError(f"channel: {err}") from None
    return channel


def _guard(info: Info[ApiContext, None]) -> EgressGuard:
    return DeliveryOptions.from_settings(info.context.cp.settings).egress


def _threshold(kind: PolicyKind, threshold: float | None) -> float | None:
    if kind.needs_threshold and (threshold is None or threshold <= 0):
        raise BadInputError(f"threshold: a {kind} policy needs a threshold > 0")
    if not kind.needs_threshold and threshold is not None:
        raise BadInputError(f"threshold: a {kind} policy takes none")
    return threshold


def _rate(value: int) -> int:
    if not 1 <= value <= 10_000:
        raise BadInputError("rateLimitPerMinute: must be between 1 and 10000")
    return value


def _name(value: str) -> str:
    if not value.strip() or len(value) > 200:
        raise BadInputError("name: must be 1 to 200 characters")
    _no_nul("name", value)
    return value


@strawberry.type
class AlertQuery:
    """Alert policies and the delivery log of the caller's deployment."""

    @strawberry.field(description="The deployment's alert policies, by name.")
    async def alert_policies(self, info: Info[ApiContext, None]) -> list[AlertPolicyType]:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await store.list_policies(session, principal.deployment_id)
        return [AlertPolicyType.build(r) for r in rows]

    @strawberry.field(description="One alert policy.")
    async def alert_policy(self, info: Info[ApiContext, None], id: str) -> AlertPolicyType:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            row = await store.get_policy(session, principal.deployment_id, id)
        return AlertPolicyType.build(row)

    @strawberry.field(
        description="The delivery log, newest first (beforeId: the next page, older)."
    )
    async def alert_deliveries(
        self,
        info: Info[ApiContext, None],
        policy_id: str | None = None,
        status: DeliveryStatusEnum | None = None,  # type: ignore[valid-type]
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[AlertDeliveryType]:
        principal = await info.context.viewer()
        if not 1 <= limit <= MAX_DELIVERIES:
            raise BadInputError(f"limit: must be between 1 and {MAX_DELIVERIES}")
        async with info.context.cp.db.reading() as session:
            rows = await store.list_deliveries(
                session,
                principal.deployment_id,
                policy_id=policy_id,
                status=DeliveryStatus(status) if status else None,
                limit=limit,
                before_id=before_id,
            )
        return [AlertDeliveryType.build(r) for r in rows]


@strawberry.type
class AlertMutation:
    """Change the caller's deployment's alert policies (editors and admins)."""

    @strawberry.mutation(description="Add an alert policy; it alerts on events from now on.")
    async def create_alert_policy(
        self,
        info: Info[ApiContext, None],
        name: str,
        kind: PolicyKindEnum,  # type: ignore[valid-type]
        channel: JSON,
        filters: JSON | None = None,
        threshold: float | None = None,
        enabled: bool = True,
        rate_limit_per_minute: int = 30,
    ) -> AlertPolicyType:
        principal = await info.context.launcher()
        kind = PolicyKind(kind)
        async with info.context.cp.db.transaction() as session:
            row = await store.create_policy(
                session,
                principal.deployment_id,
                name=_name(name),
                kind=kind,
                channel=_channel(channel, _guard(info)),
                filters=_filters(filters),
                threshold=_threshold(kind, threshold),
                enabled=enabled,
                rate_limit_per_minute=_rate(rate_limit_per_minute),
            )
        return AlertPolicyType.build(row)

    @strawberry.mutation(
        description="Change an alert policy (what is left out stays; secrets a channel of "
        "the same type leaves out stay too)."
    )
    async def update_alert_policy(
        self,
        info: Info[ApiContext, None],
        id: str,
        name: str | None = None,
        channel: JSON | None = None,
        filters: JSON | None = None,
        threshold: float | None = None,
        enabled: bool | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> AlertPolicyType:
        principal = await info.context.launcher()
        async with info.context.cp.db.transaction() as session:
            row = await store.get_policy(session, principal.deployment_id, id)
            if name is not None and name != row.name:
                if await store.get_policy_by_name(session, principal.deployment_id, _name(name)):
                    raise BadInputError(f"name: an alert policy named {name!r} exists")
                row.name = name
            if channel is not None:
                config, secret = split_channel(_channel(channel, _guard(info), keep=row))
                row.channel_type, row.channel_config, row.channel_secret = (
                    config["type"],
                    config,
                    secret,
                )
            if filters is not None:
                row.filters = _filters(filters).model_dump(mode="json", exclude_defaults=True)
            if threshold is not None:
                row.threshold = _threshold(PolicyKind(row.kind), threshold)
            if enabled is not None:
                row.enabled = enabled
            if rate_limit_per_minute is not None:
                row.rate_limit_per_minute = _rate(rate_limit_per_minute)
            row.updated_at = time.time()
            await session.flush()
        return AlertPolicyType.build(row)

    @strawberry.mutation(description="Remove an alert policy and its delivery log.")
    async def delete_alert_policy(self, info: Info[ApiContext, None], id: str) -> AlertPolicyType:
        principal = await info.context.launcher()
        async with info.context.cp.db.transaction() as session:
            row = await store.delete_policy(session, principal.deployment_id, id)
        return AlertPolicyType.build(row)

    @strawberry.mutation(
        description="Send a test alert through the policy's channel now (not rate limited, "
        "not retried); the delivery log keeps it with the outcome."
    )
    async def send_test_alert(self, info: Info[ApiContext, None], id: str) -> AlertDeliveryType:
        principal = await info.context.launcher()
        options = DeliveryOptions.from_settings(info.context.cp.settings)
        now = time.time()
        async with info.context.cp.db.transaction() as session:
            policy = await store.get_policy(session, principal.deployment_id, id)
            candidate = store.AlertCandidate(
                event=AlertEvent.TEST,
                event_key=f"test:{uuid.uuid4().hex}",
                subject="test",
                title=f"Test alert of policy {policy.name}",
                text=f"This is a test alert of the Tether alert policy {policy.name} "
                f"({policy.kind}).",
                link=f"{options.base_url.rstrip('/')}/",
                details={"test": True},
            )
            # Not due: the daemon (maybe in this process) must not send it too.
            delivery_id = await store.add_delivery(session, policy, candidate, now, due=False)
            assert delivery_id is not None
            delivery = await session.get(AlertDelivery, delivery_id)
            assert delivery is not None
        async with options.egress.http_client(timeout_s=options.timeout_s) as client:
            error = await deliver_once(client, delivery, policy, options)
        async with info.context.cp.db.transaction() as session:
            await store.record_attempt(
                session,
                delivery_id,
                at=time.time(),
                error=error,
                status=DeliveryStatus.SENT if error is None else DeliveryStatus.FAILED,
                next_attempt_at=None,
            )
            delivery = await session.get(AlertDelivery, delivery_id, populate_existing=True)
            assert delivery is not None
            return AlertDeliveryType.build(delivery)


__all__ = ["AlertMutation", "AlertQuery"]

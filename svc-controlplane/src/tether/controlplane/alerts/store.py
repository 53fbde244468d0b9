"""Alert policies and the delivery log: the statements on ``alert_policies`` and
``alert_deliveries``.

Each function takes the caller's session and never commits. Deduplication rests on one
statement: :func:`add_delivery` inserts nothing when ``UNIQUE(policy_id, event_key)``
already holds the event, so a scan that sees an event again alerts nothing twice.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.alerts.model import (
    AlertEvent,
    Channel,
    DeliveryStatus,
    PolicyFilters,
    PolicyKind,
    split_channel,
)
from tether.controlplane.db.models import AlertDelivery, AlertPolicy
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.errors import AlreadyExistsError, NotFoundError

#: Longest ``event_key`` and ``subject`` stored (their columns' length); longer ones (a long
#: asset key) keep a prefix and the SHA-256 of the whole, so they stay unique.
MAX_KEY_CHARS = 400


def fit(value: str) -> str:
    """``value``, or a unique stand-in of at most :data:`MAX_KEY_CHARS` characters."""
    if len(value) <= MAX_KEY_CHARS:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()
    return f"{value[: MAX_KEY_CHARS - len(digest) - 1]}#{digest}"


@dataclass(frozen=True)
class AlertCandidate:
    """An event a policy alerts on, before it is a delivery."""

    event: AlertEvent
    event_key: str
    subject: str
    title: str
    text: str
    link: str | None
    details: dict[str, Any]


async def create_policy(
    session: AsyncSession,
    deployment_id: str,
    *,
    name: str,
    kind: PolicyKind,
    channel: Channel,
    filters: PolicyFilters,
    threshold: float | None,
    enabled: bool = True,
    rate_limit_per_minute: int = 30,
    now: float | None = None,
) -> AlertPolicy:
    """Add a policy; it alerts on events from now on.

    Raises:
        AlreadyExistsError: the deployment has a policy of that name.
    """
    now = time.time() if now is None else now
    config, secret = split_channel(channel)
    row = AlertPolicy(
        id=uuid.uuid4().hex,
        deployment_id=deployment_id,
        name=name,
        kind=str(kind),
        enabled=enabled,
        filters=filters.model_dump(mode="json", exclude_defaults=True),
        threshold=threshold,
        channel_type=config["type"],
        channel_config=config,
        channel_secret=secret,
        rate_limit_per_minute=rate_limit_per_minute,
        scanned_until=now,
        created_at=now,
        updated_at=now,
    )
    if await get_policy_by_name(session, deployment_id, name) is not None:
        raise AlreadyExistsError(f"an alert policy named {name!r} exists")
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as err:  # a concurrent create of the same name
        raise AlreadyExistsError(f"an alert policy named {name!r} exists") from err
    return row


async def get_policy(session: AsyncSession, deployment_id: str, policy_id: str) -> AlertPolicy:
    """The deployment's policy ``policy_id``.

    Raises:
        NotFoundError: no such policy in the deployment.
    """
    row = (
        await session.execute(
            select(AlertPolicy).where(
                AlertPolicy.deployment_id == deployment_id, AlertPolicy.id == policy_id
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no alert policy {policy_id!r}")
    return row


async def get_policy_by_name(
    session: AsyncSession, deployment_id: str, name: str
) -> AlertPolicy | None:
    """The deployment's policy named ``name``, if any."""
    return (
        await session.execute(
            select(AlertPolicy).where(
                AlertPolicy.deployment_id == deployment_id, AlertPolicy.name == name
            )
        )
    ).scalar_one_or_none()


async def list_policies(session: AsyncSession, deployment_id: str) -> Sequence[AlertPolicy]:
    """The deployment's policies, by name."""
    stmt = (
        select(AlertPolicy)
        .where(AlertPolicy.deployment_id == deployment_id)
        .order_by(AlertPolicy.name)
    )
    return (await session.execute(stmt)).scalars().all()


async def enabled_policies(session: AsyncSession) -> Sequence[AlertPolicy]:
    """Every deployment's enabled policies (the alert daemon's scan)."""
    stmt = select(AlertPolicy).where(AlertPolicy.enabled.is_(True)).order_by(AlertPolicy.id)
    return (await session.execute(stmt)).scalars().all()


async def delete_policy(session: AsyncSession, deployment_id: str, policy_id: str) -> AlertPolicy:
    """Remove a policy and its delivery log.

    Raises:
        NotFoundError: no such policy in the deployment.
    """
    row = await get_policy(session, deployment_id, policy_id)
    # SQLite enforces no foreign keys here: delete the log explicitly, on both backends.
    await session.execute(delete(AlertDelivery).where(AlertDelivery.policy_id == policy_id))
    await session.delete(row)
    return row


async def advance_cursor(session: AsyncSession, policy_id: str, until: float) -> None:
    """Record that the policy's events up to ``until`` were scanned."""
    await session.execute(
        update(AlertPolicy)
        .where(AlertPolicy.id == policy_id, AlertPolicy.scanned_until < until)
        .values(scanned_until=until)
        .execution_options(synchronize_session=False)
    )


async def add_delivery(
    session: AsyncSession,
    policy: AlertPolicy,
    candidate: AlertCandidate,
    now: float,
    *,
    due: bool = True,
) -> int | None:
    """Add the alert of ``candidate``, due now (``due=False``: never due, for the caller
    sends it itself: a test alert); return its id, or None when the policy already
    alerted on that event."""
    return (
        await session.execute(
            upsert_insert(session, AlertDelivery.__table__)
            .values(
                deployment_id=policy.deployment_id,
                policy_id=policy.id,
                event_key=fit(candidate.event_key),
                event=str(candidate.event),
                subject=fit(candidate.subject),
                title=candidate.title,
                body=candidate.text,
                link=candidate.link,
                details=candidate.details,
                status=str(DeliveryStatus.PENDING),
                attempts=0,
                next_attempt_at=now if due else None,
                attempts_log=[],
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["policy_id", "event_key"])
            .returning(AlertDelivery.__table__.c.id)
        )
    ).scalar_one_or_none()


async def latest_delivery(
    session: AsyncSession, policy_id: str, subject: str, events: Sequence[AlertEvent]
) -> AlertDelivery | None:
    """The policy's last alert about ``subject`` among ``events`` (the state of an
    episodic alert: offline/back, backlog high/ok)."""
    stmt = (
        select(AlertDelivery)
        .where(
            AlertDelivery.policy_id == policy_id,
            AlertDelivery.subject == subject,
            AlertDelivery.event.in_([str(e) for e in events]),
        )
        .order_by(AlertDelivery.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def due_deliveries(
    session: AsyncSession, now: float, limit: int = 200
) -> Sequence[tuple[AlertDelivery, AlertPolicy]]:
    """Deliveries whose next attempt is due, with their (enabled) policies, oldest first."""
    stmt = (
        select(AlertDelivery, AlertPolicy)
        .join(AlertPolicy, AlertPolicy.id == AlertDelivery.policy_id)
        .where(
            AlertDelivery.status.in_([str(DeliveryStatus.PENDING), str(DeliveryStatus.RETRYING)]),
            AlertDelivery.next_attempt_at <= now,
            AlertPolicy.enabled.is_(True),
        )
        .order_by(AlertDelivery.id)
        .limit(limit)
    )
    return [(d, p) for d, p in (await session.execute(stmt)).all()]


async def next_due_at(session: AsyncSession) -> float | None:
    """When the earliest waiting delivery of an enabled policy falls due (None: none
    waits; a disabled policy's wait until it is enabled again)."""
    stmt = (
        select(func.min(AlertDelivery.next_attempt_at))
        .join(AlertPolicy, AlertPolicy.id == AlertDelivery.policy_id)
        .where(
            AlertDelivery.status.in_([str(DeliveryStatus.PENDING), str(DeliveryStatus.RETRYING)]),
            AlertPolicy.enabled.is_(True),
        )
    )
    value = (await session.execute(stmt)).scalar_one_or_none()
    return None if value is None else float(value)


async def record_attempt(
    session: AsyncSession,
    delivery_id: int,
    *,
    at: float,
    error: str | None,
    status: DeliveryStatus,
    next_attempt_at: float | None,
) -> None:
    """Log one attempt of a delivery and move it to ``status``."""
    row = await session.get(AlertDelivery, delivery_id)
    if row is None:  # its policy was deleted meanwhile
        return
    row.attempts += 1
    row.attempts_log = [*row.attempts_log, {"at": at, "ok": error is None, "error": error}]
    row.status = str(status)
    row.last_error = error
    row.next_attempt_at = next_attempt_at
    if status == DeliveryStatus.SENT:
        row.sent_at = at


async def postpone(session: AsyncSession, delivery_id: int, until: float) -> None:
    """Make a delivery wait until ``until`` (its channel's rate limit), no attempt spent."""
    await session.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == delivery_id)
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )


async def list_deliveries(
    session: AsyncSession,
    deployment_id: str,
    *,
    policy_id: str | None = None,
    status: DeliveryStatus | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> Sequence[AlertDelivery]:
    """The deployment's delivery log, newest first (``before_id``: the next page)."""
    stmt = select(AlertDelivery).where(AlertDelivery.deployment_id == deployment_id)
    if policy_id is not None:
        stmt = stmt.where(AlertDelivery.policy_id == policy_id)
    if status is not None:
        stmt = stmt.where(AlertDelivery.status == str(status))
    if before_id is not None:
        stmt = stmt.where(AlertDelivery.id < before_id)
    stmt = stmt.order_by(AlertDelivery.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()

"""The alert daemon: finds the events each policy alerts on, and delivers the alerts.

Each check has two halves. *Detect*: for every enabled policy, its kind's finder
(:mod:`~tether.controlplane.alerts.detect`) lists the events since the policy's cursor,
and each becomes a delivery row, due now, unless ``UNIQUE(policy_id, event_key)`` says the
policy alerted on it already (one alert per event and policy, across restarts and
take-overs). *Deliver*: every due delivery is sent through its policy's channel, outside
any transaction (a slow receiver holds no lock), then its attempt is logged: SENT; or, a
failure a retry may cure, RETRYING with a doubling, jittered wait, until
``max_attempts``; else FAILED with the error. A channel sends at most its policy's
``rate_limit_per_minute``; the others wait their turn (postponed, no attempt spent).

The rows are the state, so a daemon killed between a send and its log entry sends that
alert again at its next check (at least once; the generic webhook's ``X-Tether-Delivery``
header lets a receiver drop the repeat).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tether.controlplane.alerts import detect, store
from tether.controlplane.alerts.channels import DeliveryError, send
from tether.controlplane.alerts.egress import EgressGuard, parse_networks
from tether.controlplane.alerts.model import (
    AlertEvent,
    AlertMessage,
    DeliveryStatus,
    PolicyFilters,
    PolicyKind,
    join_channel,
)
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import AlertDelivery, AlertPolicy
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import runs

log = logging.getLogger(__name__)

#: The rate limit's window.
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class DeliveryOptions:
    """How alerts are delivered (from the control plane's settings)."""

    base_url: str = "http://127.0.0.1:3000"
    max_attempts: int = 6
    retry_base_s: float = 10.0
    retry_max_s: float = 600.0
    timeout_s: float = 10.0
    smtp_ca_file: Path | None = None
    #: Where deliveries may connect (public addresses, and the allowed networks).
    egress: EgressGuard = field(default_factory=EgressGuard)

    @classmethod
    def from_settings(cls, settings: ControlPlaneSettings) -> DeliveryOptions:
        """The options the control plane's settings say."""
        return cls(
            base_url=settings.ui_base_url,
            max_attempts=settings.alert_max_attempts,
            retry_base_s=settings.alert_retry_base_s,
            retry_max_s=settings.alert_retry_max_s,
            timeout_s=settings.alert_timeout_s,
            smtp_ca_file=settings.alert_smtp_ca_file,
            egress=EgressGuard(parse_networks(settings.alert_egress_allow)),
        )

    def backoff_s(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt: doubling from the base, at
        most the max, jittered down to half so retries of many alerts spread out."""
        nominal = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
        return nominal * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class CheckResult:
    """What one check did (for tests and logs): deliveries created, sent, failed."""

    created: list[int]
    sent: list[int]
    failed: list[int]


def message_of(delivery: AlertDelivery, policy: AlertPolicy) -> AlertMessage:
    """The alert a delivery row carries, as channels render it."""
    return AlertMessage(
        delivery_id=delivery.id,
        deployment_id=delivery.deployment_id,
        policy_id=policy.id,
        policy_name=policy.name,
        policy_kind=policy.kind,
        event=AlertEvent(delivery.event),
        event_key=delivery.event_key,
        subject=delivery.subject,
        title=delivery.title,
        text=delivery.body,
        link=delivery.link,
        details=delivery.details,
        created_at=delivery.created_at,
        attempt=delivery.attempts + 1,
    )


async def deliver_once(
    client: httpx.AsyncClient,
    delivery: AlertDelivery,
    policy: AlertPolicy,
    options: DeliveryOptions,
) -> str | None:
    """Send one delivery; return the error (None: sent). Never raises for a channel."""
    try:
        channel = join_channel(policy.channel_config, policy.channel_secret)
        await send(
            client,
            channel,
            message_of(delivery, policy),
            timeout_s=options.timeout_s,
            guard=options.egress,
            smtp_ca_file=str(options.smtp_ca_file) if options.smtp_ca_file else None,
        )
    except DeliveryError as err:
        return str(err) if err.transient else f"permanent: {err}"
    except Exception as err:  # a bug must not stop the other alerts; it is logged as one
        log.exception("alert delivery %d failed unexpectedly", delivery.id)
        return f"permanent: {type(err).__name__}: {err}"
    return None


class AlertDaemon(PeriodicDaemon):
    """Detects the events of every enabled policy and delivers their alerts.

    Args:
        db: the metadata DB.
        options: links, retries, timeouts.
        interval_s: most seconds between checks (a run ending wakes it).
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        options: DeliveryOptions | None = None,
        *,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("alert daemon", interval_s=interval_s, clock=clock)
        self._db = db
        self.options = options or DeliveryOptions()
        self._sent_at: dict[str, deque[float]] = {}
        db.watch(runs.RUN_QUEUE_CHANGED, self.wake)

    async def check(self) -> CheckResult:
        """Detect new events, then send what is due."""
        created = await self.detect()
        sent, failed = await self.deliver()
        async with self._db.reading() as session:
            self.wake_at = await store.next_due_at(session)
        return CheckResult(created=created, sent=sent, failed=failed)

    async def detect(self) -> list[int]:
        """Add a delivery per new event of every enabled policy; return their ids."""
        created: list[int] = []
        now = self.now()
        async with self._db.reading() as session:
            policies = await store.enabled_policies(session)
        for policy in policies:
            # One transaction per policy: one policy's odd row does not hold back the rest.
            try:
                async with self._db.transaction() as session:
                    scan = detect.Scan(
                        policy=policy,
                        filters=PolicyFilters.model_validate(policy.filters),
                        since=max(policy.created_at, policy.scanned_until - detect.OVERLAP_S),
                        now=now,
                        base_url=self.options.base_url,
                    )
                    for candidate in await detect.FINDERS[PolicyKind(policy.kind)](session, scan):
                        delivery_id = await store.add_delivery(session, policy, candidate, now)
                        if delivery_id is not None:
                            created.append(delivery_id)
                    await store.advance_cursor(session, policy.id, now)
            except Exception:
                log.exception("alert policy %s (%s): detection failed", policy.name, policy.id)
        if created:
            log.info("alert daemon: %d new alert(s)", len(created))
        return created

    async def deliver(self) -> tuple[list[int], list[int]]:
        """Send every due delivery (channels in parallel, each channel in order); return the
        ids sent and those that failed for good."""
        now = self.now()
        async with self._db.reading() as session:
            due = await store.due_deliveries(session, now)
        by_policy: dict[str, list[tuple[AlertDelivery, AlertPolicy]]] = {}
        for delivery, policy in due:
            by_policy.setdefault(policy.id, []).append((delivery, policy))
        sent: list[int] = []
        failed: list[int] = []
        async with self.options.egress.http_client(timeout_s=self.options.timeout_s) as client:
            await asyncio.gather(
                *(
                    self._deliver_channel(client, items, sent, failed)
                    for items in by_policy.values()
                )
            )
        return sent, failed

    async def _deliver_channel(
        self,
        client: httpx.AsyncClient,
        items: list[tuple[AlertDelivery, AlertPolicy]],
        sent: list[int],
        failed: list[int],
    ) -> None:
        for delivery, policy in items:
            window = self._sent_at.setdefault(policy.id, deque())
            now = self.now()
            while window and window[0] <= now - RATE_WINDOW_S:
                window.popleft()
            if len(window) >= policy.rate_limit_per_minute:
                async with self._db.transaction() as session:
                    await store.postpone(session, delivery.id, window[0] + RATE_WINDOW_S)
                continue
            window.append(now)
            error = await deliver_once(client, delivery, policy, self.options)
            at = self.now()
            attempts = delivery.attempts + 1
            if error is None:
                status, next_at = DeliveryStatus.SENT, None
                sent.append(delivery.id)
            elif error.startswith("permanent: ") or attempts >= self.options.max_attempts:
                status, next_at = DeliveryStatus.FAILED, None
                failed.append(delivery.id)
                log.warning("alert %d (policy %s) failed: %s", delivery.id, policy.name, error)
            else:
                status, next_at = DeliveryStatus.RETRYING, at + self.options.backoff_s(attempts)
                log.info(
                    "alert %d (policy %s) will be retried: %s", delivery.id, policy.name, error
                )
            async with self._db.transaction() as session:
                await store.record_attempt(
                    session, delivery.id, at=at, error=error, status=status, next_attempt_at=next_at
                )

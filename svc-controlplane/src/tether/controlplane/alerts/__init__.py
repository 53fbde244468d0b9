"""Alerts: policies (what to alert on, per deployment), channels (Slack, Teams, a signed
generic webhook, e-mail, PagerDuty) and the daemon that detects events and delivers
alerts with deduplication, retries, rate limits and a delivery log.
"""

from tether.controlplane.alerts.daemon import AlertDaemon, CheckResult, DeliveryOptions
from tether.controlplane.alerts.model import (
    AlertEvent,
    DeliveryStatus,
    PolicyFilters,
    PolicyKind,
)

__all__ = [
    "AlertDaemon",
    "AlertEvent",
    "CheckResult",
    "DeliveryOptions",
    "DeliveryStatus",
    "PolicyFilters",
    "PolicyKind",
]

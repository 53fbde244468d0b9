"""Tether poller: claims work items from the control plane and republishes them on NATS."""

from tether.poller.dispatch import DispatchOutcome, WorkDispatcher
from tether.poller.service import DispatchFailedError, PollerError, PollerService
from tether.poller.settings import PollerSettings

__all__ = [
    "DispatchFailedError",
    "DispatchOutcome",
    "PollerError",
    "PollerService",
    "PollerSettings",
    "WorkDispatcher",
]

"""tether-eventrelay: batches run events and work results from NATS up to the control plane."""

from tether.eventrelay.service import EventRelay
from tether.eventrelay.settings import EventRelaySettings

__all__ = ["EventRelay", "EventRelaySettings"]

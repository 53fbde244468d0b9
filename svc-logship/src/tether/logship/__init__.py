"""tether-logship: batches raw compute logs (stdout/stderr) from NATS to a log sink."""

from tether.logship.service import LogShip
from tether.logship.settings import LogShipSettings
from tether.logship.sinks import ControlPlaneSink, LogSink

__all__ = ["ControlPlaneSink", "LogShip", "LogShipSettings", "LogSink"]

"""tether-logship: batches raw compute logs (stdout/stderr) from NATS to a log sink."""

from tether.logship.objectstore import S3LogStore
from tether.logship.service import LogShip
from tether.logship.settings import LogShipSettings
from tether.logship.sinks import ControlPlaneSink, LogSink, S3Sink

__all__ = ["ControlPlaneSink", "LogShip", "LogShipSettings", "LogSink", "S3LogStore", "S3Sink"]

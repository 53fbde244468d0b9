"""Daemons of the control plane: scheduler, sensor daemon, backfill daemon, run coordinator,
run monitor, run retrier.

Each is a :class:`PeriodicDaemon` (``run()`` until ``shutdown()``, ``check()`` once, a
clock tests control) that never talks to an agent: it writes work items and reads their
results, so it can run inside ``serve`` or on its own (``tether controlplane daemons``). On
PostgreSQL one process at a time runs each daemon, the holder of its leadership lock
(:class:`~tether.controlplane.db.locks.Leadership`); two at once (during a take-over) are
still harmless.
"""

from tether.controlplane.daemons.backfills import BackfillDaemon
from tether.controlplane.daemons.coordinator import RunCoordinator
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.daemons.monitor import RunMonitor
from tether.controlplane.daemons.retrier import RunRetrier
from tether.controlplane.daemons.scheduler import Scheduler
from tether.controlplane.daemons.sensors import SensorDaemon

__all__ = [
    "BackfillDaemon",
    "PeriodicDaemon",
    "RunCoordinator",
    "RunMonitor",
    "RunRetrier",
    "Scheduler",
    "SensorDaemon",
]

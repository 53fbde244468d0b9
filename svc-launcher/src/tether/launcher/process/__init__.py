"""The process substrate: code servers and run workers as local OS processes.

Runs start warm (forked by the location's fork server) when one is ready, else cold
(``tether api execute-run`` in a fresh interpreter), at most so many cold ones starting
at once.
"""

from tether.launcher.process._coldstarts import ColdStartGate, NatsRunStarts
from tether.launcher.process._forkserver import ForkServerError, ForkServers
from tether.launcher.process._handles import ProcessCodeServer, ProcessRunWorker
from tether.launcher.process._spawned import process_running, process_start_ticks
from tether.launcher.process._substrate import ProcessSubstrate

__all__ = [
    "ColdStartGate",
    "ForkServerError",
    "ForkServers",
    "NatsRunStarts",
    "ProcessCodeServer",
    "ProcessRunWorker",
    "ProcessSubstrate",
    "process_running",
    "process_start_ticks",
]

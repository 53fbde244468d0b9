"""What an op sees at run time: its run, its name, its validated config and a logger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Signature of the sink an OpLogger writes to: (level, message, step_key).
LogSink = Callable[[str, str, str], None]


def _discard(level: str, message: str, step_key: str) -> None:
    """Default sink for a context built outside a run (direct calls, tests)."""


@dataclass(frozen=True)
class OpLogger:
    """Structured logger of one step; each call becomes a ``LOG`` run event."""

    step_key: str
    sink: LogSink = _discard

    def debug(self, message: str) -> None:
        """Log ``message`` at DEBUG level."""
        self.sink("DEBUG", str(message), self.step_key)

    def info(self, message: str) -> None:
        """Log ``message`` at INFO level."""
        self.sink("INFO", str(message), self.step_key)

    def warning(self, message: str) -> None:
        """Log ``message`` at WARNING level."""
        self.sink("WARNING", str(message), self.step_key)

    def error(self, message: str) -> None:
        """Log ``message`` at ERROR level."""
        self.sink("ERROR", str(message), self.step_key)


@dataclass(frozen=True)
class OpContext:
    """Passed to an op whose first parameter is named ``context``.

    Attributes:
        run_id: id of the run executing the op.
        op_name: the node's name in its job (the alias when an op is used twice).
        op_config: the op's validated config model instance, or None without a config.
        log: logger whose calls become ``LOG`` run events.
    """

    run_id: str
    op_name: str
    op_config: Any = None
    log: OpLogger = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.log is None:
            object.__setattr__(self, "log", OpLogger(self.op_name))

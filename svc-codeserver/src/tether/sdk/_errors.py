"""Errors the SDK raises on purpose."""

from __future__ import annotations

from tether.shared.wire.errors import TetherError


class DefinitionError(TetherError, ValueError):
    """An op, job or Definitions object is malformed (raised at decoration time)."""


class UserCodeError(TetherError):
    """User code of a schedule, sensor or partition function failed or returned nonsense.

    The exception the user code raised, if any, is the ``__cause__``, so its class and
    traceback travel with the error.

    Attributes:
        kind: "schedule", "sensor" or "partition set".
        name: the schedule, sensor or partition set.
    """

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f"{kind} {name!r}: {message}")
        self.kind = kind
        self.name = name

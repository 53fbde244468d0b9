"""Error roots shared by all Tether packages."""

from __future__ import annotations


class TetherError(Exception):
    """Root of every error Tether raises on purpose."""


class ContractError(TetherError, ValueError):
    """A wire message or subject does not follow the shared contract."""


class AgentApiError(TetherError):
    """The control plane answered an agent-API call with an error.

    Attributes:
        transient: whether retrying the same call may succeed.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

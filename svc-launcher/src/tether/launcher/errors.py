"""Errors of the launcher."""

from __future__ import annotations

from tether.shared.wire.errors import TetherError


class LauncherError(TetherError):
    """Root of errors raised by the launcher."""


class CodeServerStartError(LauncherError):
    """A code server did not come up (exited, timed out, or printed no ready line).

    Attributes:
        location_name: the code location.
        stderr_tail: the last lines the process wrote to stderr.
    """

    def __init__(self, location_name: str, reason: str, stderr_tail: str = "") -> None:
        message = f"code server for location {location_name!r} failed to start: {reason}"
        if stderr_tail:
            message += f"\n--- stderr (tail) ---\n{stderr_tail}"
        super().__init__(message)
        self.location_name = location_name
        self.stderr_tail = stderr_tail


class RunLaunchError(LauncherError):
    """A run worker could not be started."""


class RunWorkerError(LauncherError):
    """A run worker ended for a reason its exit code does not tell (the substrate's
    explanation: a Kubernetes Job whose pod could not be created, a passed deadline)."""


class UnsupportedWorkError(LauncherError):
    """A well-formed work item this launcher has no handler for."""


class LocationRefusedError(CodeServerStartError, RunLaunchError):
    """The agent refuses a location's config (its policy, or an unresolvable reference).

    Raised before anything starts; it is the location's load error (``load_location``)
    or the run's launch error, so both handlers report it without knowing of policies.

    Attributes:
        location_name: the code location.
        reason: what is refused and which setting allows it.
    """

    def __init__(self, location_name: str, reason: str) -> None:
        LauncherError.__init__(self, f"location {location_name!r} refused by the agent: {reason}")
        self.location_name = location_name
        self.stderr_tail = ""
        self.reason = reason

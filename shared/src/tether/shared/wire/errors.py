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
        code: the GraphQL error's ``extensions.code`` (``BAD_INPUT`` when the request's
            content was refused, ``UNAUTHENTICATED`` for a bad token), if any.
    """

    def __init__(self, message: str, *, transient: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code

    @property
    def is_bad_input(self) -> bool:
        """Whether the content itself was refused (so retrying it can never succeed)."""
        return self.code == BAD_INPUT

    @property
    def is_too_large(self) -> bool:
        """Whether the request was over the size limit (smaller batches will pass)."""
        return self.code == REQUEST_TOO_LARGE


#: GraphQL ``extensions.code`` for content the control plane refuses.
BAD_INPUT = "BAD_INPUT"
#: GraphQL ``extensions.code`` for a missing or invalid token.
UNAUTHENTICATED = "UNAUTHENTICATED"
#: GraphQL ``extensions.code`` for a request body over the control plane's size limit: nothing
#: of it was stored; the same items sent in smaller batches will be accepted.
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"

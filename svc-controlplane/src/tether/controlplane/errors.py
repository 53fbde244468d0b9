"""Errors of the control plane.

:class:`ApiError` and its subclasses are refusals meant for the client: the GraphQL layer
returns their message and ``extensions.code`` as they are. Anything else raised while
serving a request is a bug or an outage, and the client only sees a generic message.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from tether.shared.wire.errors import BAD_INPUT, UNAUTHENTICATED, TetherError


class ControlPlaneError(TetherError):
    """Root of every error the control plane raises on purpose."""


class ApiError(ControlPlaneError):
    """A request refused with a message the client should see.

    Attributes:
        code: GraphQL ``extensions.code``.
        extensions: what graphql-core copies into the error's ``extensions``.
    """

    code = "BAD_REQUEST"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": self.code}


class UnauthenticatedError(ApiError):
    """The request has no valid token for what it asks."""

    code = UNAUTHENTICATED


class ForbiddenError(ApiError):
    """The request's token is valid but its role may not do what it asks."""

    code = "FORBIDDEN"


class BadInputError(ApiError, ValueError):
    """The request's content is malformed; retrying it unchanged can never succeed."""

    code = BAD_INPUT


class NotFoundError(ApiError, LookupError):
    """The request names something that does not exist (in the caller's deployment)."""

    code = "NOT_FOUND"


class AlreadyExistsError(ApiError):
    """The request would create something whose name is taken."""

    code = "ALREADY_EXISTS"


class BootstrapError(ControlPlaneError, ValueError):
    """The startup configuration (token file, workspace file) cannot be used."""


class WorkspaceFileError(BootstrapError):
    """The workspace TOML file cannot be read or does not describe valid locations."""


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem of a pydantic error: ``field.path: message``, joined by '; '."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
    )

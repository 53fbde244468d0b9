"""Pages read and act through the control plane's own GraphQL schema, executed in-process.

So the UI exercises exactly the API users script against, including its validation, its
error masking, and (once user tokens exist) its scoping: the page's HTTP request is the
resolvers' ``info.context.request``, so the browser's ``Authorization`` header reaches the
same checks a GraphQL client's would, and a signed-in session (:mod:`.sessions`) acts as
the token it was created from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from tether.controlplane.api import ApiContext, build_schema
from tether.controlplane.api.schema import INTERNAL_ERROR_MESSAGE
from tether.controlplane.errors import BAD_INPUT, UNAUTHENTICATED

if TYPE_CHECKING:
    from tether.controlplane.core import ControlPlane

#: HTTP status of a page whose operation was refused with this GraphQL error code.
STATUS_FOR_CODE = {
    UNAUTHENTICATED: 401,
    BAD_INPUT: 400,
    "NOT_FOUND": 404,
    "FORBIDDEN": 403,
    # No agent answered a question the API asked it (e.g. partitionKeys) in time.
    "AGENT_TIMEOUT": 504,
    # The agent answered with an error (e.g. it cannot presign compute-log URLs).
    "AGENT_ERROR": 502,
}


class PageError(Exception):
    """An operation of a page failed; shown to the user as one sentence, never a stack.

    Attributes:
        message: what to tell the user.
        status: HTTP status of the error page.
        code: the GraphQL error code of a refusal, if any (pages react to some).
    """

    def __init__(self, message: str, status: int = 500, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class SchemaClient:
    """Executes GraphQL documents against the control plane's schema, in this process."""

    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp
        self._schema = build_schema()

    async def execute(self, request: Request, document: str, **variables: Any) -> dict[str, Any]:
        """Run ``document`` as ``request``'s sender would; return its ``data``.

        Raises:
            PageError: the operation was refused (its message, with a matching HTTP status)
                or failed (the schema's generic message; the traceback is in the server log).
        """
        # A signed-in session acts as its token (see .sessions); the cookie never holds it.
        session = getattr(request.state, "ui_session", None)
        context = ApiContext(
            request=request,
            response=Response(),
            cp=self._cp,
            ui_principal=session.principal if session is not None else None,
        )
        result = await self._schema.execute(
            document, variable_values=variables, context_value=context
        )
        if result.errors:
            error = result.errors[0]
            code = (error.extensions or {}).get("code")
            if code in STATUS_FOR_CODE:
                raise PageError(error.message, STATUS_FOR_CODE[code], code)
            if error.message == INTERNAL_ERROR_MESSAGE:
                raise PageError("The control plane failed to answer; see its log.", 500)
            # A syntax or validation error here is a bug of the page's own document.
            raise PageError(f"The page asked the API something it cannot answer: {error.message}")
        assert result.data is not None
        return result.data

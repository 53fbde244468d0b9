"""One bound on request bodies for every route, enforced while the body streams in.

A body is never buffered here: a ``Content-Length`` over the limit is refused before a
byte of the body is read, and a body without one (chunked) is counted chunk by chunk as
the app reads it, refused as soon as the count passes the limit. The app then stops (its
next ``receive`` raises), so a 300 MB post costs the server one chunk of memory, not 300 MB.

The refusal says what to do. On ``/graphql`` it is a GraphQL error with
``extensions.code = "REQUEST_TOO_LARGE"`` and the limit in ``extensions.maxBytes`` (a bare
``413`` tells an agent nothing, and a relay that treats it as "bad input" would dead-letter,
i.e. lose, a batch that is only too big): nothing of the request was stored, and the same
items sent in smaller batches will be. Elsewhere (UI form posts) it is a one-line text.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tether.shared.wire.errors import REQUEST_TOO_LARGE


class _BodyTooLarge(Exception):  # noqa: N818 - control flow inside the app only
    """Raised into the app by ``receive`` once the body passed the limit (never escapes)."""


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``max_bytes``, streaming.

    Args:
        app: the wrapped ASGI app.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting ``receive``, or answer the refusal."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            # Refuse at once, from the header: no need to receive megabytes to say no.
            await self._refuse(scope, send, declared)
            return
        size = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal size
            if refused:
                # The app caught the error and asks again: the request is over for it.
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                # Whatever the app answers after the refusal (an error page of the
                # exception it saw) is dropped: the client already has its 413.
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            refused = True
            if not response_started:
                await self._refuse(scope, send, None)
        except Exception:
            if size <= self.max_bytes:
                raise
            # An app that wrapped our error in its own: the refusal stands, nothing else.
            refused = True
            if not response_started:
                await self._refuse(scope, send, None)

    async def _refuse(self, scope: Scope, send: Send, size: int | None) -> None:
        what = f"request body of {size} bytes" if size is not None else "request body"
        message = (
            f"{what} is over the control plane's limit of {self.max_bytes} bytes "
            "(TETHER_CONTROLPLANE_MAX_REQUEST_BYTES); nothing of it was stored"
        )
        if scope.get("path", "").startswith("/graphql"):
            kind = b"application/json"
            body = json.dumps(
                {
                    "data": None,
                    "errors": [
                        {
                            "message": message + ": send the items in smaller batches",
                            "extensions": {
                                "code": REQUEST_TOO_LARGE,
                                "maxBytes": self.max_bytes,
                            },
                        }
                    ],
                }
            ).encode()
        else:
            kind = b"text/plain; charset=utf-8"
            body = (message + ".\n").encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", kind),
                    (b"content-length", str(len(body)).encode()),
                    # The unread rest of the body makes the connection unusable for another
                    # request; say so rather than leave the client to find out.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

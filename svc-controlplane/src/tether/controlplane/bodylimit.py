"""A bound on request bodies, refused as a GraphQL error that says what to do.

A bare ``413`` from a proxy or server tells an agent nothing, and a relay that treats it as
"bad input" would dead-letter (lose) a batch that is only too big. Here the refusal is a
GraphQL error with ``extensions.code = "REQUEST_TOO_LARGE"`` and the limit in
``extensions.maxBytes``: nothing of the request was stored, and the same items sent in
smaller batches will be.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tether.shared.errors import REQUEST_TOO_LARGE


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` before the app sees them.

    Args:
        app: the wrapped ASGI app.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its (bounded) body, or answer the refusal."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            # Refuse at once, from the header: no need to receive megabytes to say no.
            await self._refuse(send, declared)
            return
        # No or an honest Content-Length: read the body ourselves, counting, then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send, None)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                # After the body, the app may wait for a disconnect: pass the real one on.
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int | None) -> None:
        what = f"{size} bytes" if size is not None else "more bytes"
        message = (
            f"request body of {what} is over the control plane's limit of {self.max_bytes} "
            "bytes (TETHER_CONTROLPLANE_MAX_REQUEST_BYTES); nothing of it was stored: "
            "send the items in smaller batches"
        )
        body = json.dumps(
            {
                "data": None,
                "errors": [
                    {
                        "message": message,
                        "extensions": {"code": REQUEST_TOO_LARGE, "maxBytes": self.max_bytes},
                    }
                ],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
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

"""The GraphQL type of an error raised by user code or the platform (runs, ticks, loads)."""

from __future__ import annotations

from typing import Any

import strawberry


@strawberry.type(name="ErrorInfo", description="An error raised by user code or the platform.")
class ErrorInfoType:
    """An error raised by user code or the platform."""

    cls_name: str
    message: str
    traceback: str

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ErrorInfoType | None:
        """Build from a stored ErrorInfo dict."""
        if not data:
            return None
        return cls(
            cls_name=str(data.get("cls_name", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )

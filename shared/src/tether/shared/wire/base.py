"""The base of every wire message (strict, frozen), ids, errors as data, and the JSON codec.

Every message carries a ``type`` naming its schema and version (``tether.v1.run_event``);
a consumer that sees an unknown type or a malformed body raises :class:`ContractError`
and dead-letters the message instead of looping on it. Pure: no I/O in ``wire``.
"""

from __future__ import annotations

import traceback as _traceback
import uuid
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tether.shared.wire.errors import ContractError


def new_id() -> str:
    """Return a new random identifier (hex UUID4), safe as a subject token."""
    return uuid.uuid4().hex


class WireModel(BaseModel):
    """Base of all wire messages: strict about unknown fields, frozen once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorInfo(WireModel):
    """A serializable error: what user code or a dependency raised."""

    cls_name: str = Field(description="Qualified class name of the exception.")
    message: str = Field(description="str() of the exception.")
    traceback: str = Field(default="", description="Formatted traceback, most recent call last.")
    cause: ErrorInfo | None = Field(default=None, description="The exception's __cause__.")

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture an exception (and its explicit cause) as ErrorInfo."""
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        tb = "".join(_traceback.format_exception(kind, exc, exc.__traceback__, chain=False))
        cause = cls.from_exception(exc.__cause__) if exc.__cause__ is not None else None
        return cls(cls_name=name, message=str(exc), traceback=tb, cause=cause)


M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Serialize a wire message to JSON bytes."""
    return message.model_dump_json(exclude_none=False).encode()


def decode(data: bytes | str, model: type[M]) -> M:
    """Parse JSON bytes into ``model``; raise ContractError with the reason otherwise."""
    try:
        return model.model_validate_json(data)
    except ValidationError as err:
        raise ContractError(f"malformed {model.__name__}: {err}") from err

"""Bounds of every field an agent uploads, beyond what the wire models check.

The wire models (``tether.shared.wire``) say what a message is; these say what the
control plane will store: integers that fit a BIGINT, finite timestamps, keys that are
printable and short, items of bounded size. An item out of bounds is refused on its own,
with the reason (see :func:`parse_items`), so one bad message never holds back the others
of its batch, and a relay dead-letters it instead of retrying it for ever.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError
from tether.controlplane.errors import BadInputError, describe_validation_error
from tether.shared.wire.agent import Heartbeat
from tether.shared.wire.logs import ComputeLogPointer, LogChunk, compute_log_key_suffix
from tether.shared.wire.runs import LostRunEvents, RunEvent
from tether.shared.wire.work import WorkResult

__all__ = [
    "MAX_INT",
    "Refusal",
    "check_agent_id",
    "parse_items",
    "problem_of",
]

#: Largest integer a BIGINT column (SQLite and PostgreSQL) holds.
MAX_INT = 2**63 - 1
#: Latest timestamp accepted (epoch seconds, year 2255): far past any clock, well in range.
MAX_TIMESTAMP = 9e9
#: A step key, kind or agent id: printable characters (at most its column's length).
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
#: Ids the control plane hands out (hex, or ``launch-<hex>``) and their report suffixes.
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
#: A W3C traceparent.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Refusal:
    """An item of an upload that was not stored, and why (retrying it cannot succeed)."""

    index: int
    reason: str
    id: str | None = None


def _timestamp(name: str, value: float) -> str | None:
    if not math.isfinite(value) or not 0 <= value <= MAX_TIMESTAMP:
        return f"{name} must be finite epoch seconds within [0, {MAX_TIMESTAMP:g}], not {value!r}"
    return None


def _integer(name: str, value: int) -> str | None:
    if not 0 <= value <= MAX_INT:
        return f"{name} must be within [0, 2**63 - 1], not {value}"
    return None


def _key(name: str, value: str | None, max_length: int = 200) -> str | None:
    if value is not None and not (len(value) <= max_length and _PRINTABLE.fullmatch(value)):
        return f"{name} must be 1-{max_length} printable characters, not {value[:80]!r}"
    return None


def _id(name: str, value: str) -> str | None:
    if not _ID.fullmatch(value):
        return f"{name} must be 1-200 of [A-Za-z0-9_.:-], not {value[:80]!r}"
    return None


def _traceparent(value: str | None) -> str | None:
    if value is not None and not _TRACEPARENT.fullmatch(value):
        return f"traceparent must be a W3C traceparent, not {value[:80]!r}"
    return None


def _pointer_key(pointer: ComputeLogPointer) -> str | None:
    """A pointer's key must name the object of its own run, step, stream and bytes: the
    control plane later asks the agent to presign exactly the keys its pointers recorded."""
    suffix = compute_log_key_suffix(
        pointer.run_id,
        pointer.step_key,
        pointer.stream,
        pointer.offset,
        pointer.offset + pointer.length,
    )
    prefix = pointer.key.removesuffix(suffix)
    if prefix == pointer.key or ".." in prefix.split("/"):
        return (
            f"key {pointer.key[:200]!r} is not the object of its run, step and stream (…{suffix})"
        )
    return None


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p is not None), None)


def problem_of(item: BaseModel) -> str | None:
    """Why ``item`` (a validated upload) cannot be stored; None when it can."""
    if isinstance(item, RunEvent):
        return _first(
            _id("run_id", item.run_id),
            _integer("seq", item.seq),
            _timestamp("timestamp", item.timestamp),
            _key("step_key", item.step_key),
            _traceparent(item.traceparent),
        )
    if isinstance(item, LostRunEvents):
        return _first(
            _id("run_id", item.run_id),
            *(_integer("seq", seq) for seq in item.seqs),
            _timestamp("reported_at", item.reported_at),
        )
    if isinstance(item, LogChunk):
        return _first(
            _id("run_id", item.run_id),
            _key("step_key", item.step_key),
            _integer("offset", item.offset),
            _integer("offset + len(data)", item.offset + len(item.data)),
            _timestamp("timestamp", item.timestamp),
        )
    if isinstance(item, ComputeLogPointer):
        return _first(
            _id("run_id", item.run_id),
            _key("step_key", item.step_key),
            _integer("offset", item.offset),
            _integer("offset + length", item.offset + item.length),
            _timestamp("timestamp", item.timestamp),
            _pointer_key(item),
        )
    if isinstance(item, WorkResult):
        return _first(
            _id("id", item.id),
            _id("work_item_id", item.work_item_id),
            _key("kind", item.kind, 64),
            _timestamp("created_at", item.created_at),
            _traceparent(item.traceparent),
        )
    if isinstance(item, Heartbeat):
        return _first(_key("agent_id", item.agent_id), _timestamp("timestamp", item.timestamp))
    return None


def check_agent_id(agent_id: str) -> None:
    """Refuse an agent id that is not 1-200 printable characters.

    Raises:
        BadInputError: naming the problem.
    """
    problem = _key("agentId", agent_id)
    if problem is not None:
        raise BadInputError(problem)


def parse_items(
    model: type[M],
    items: Sequence[Any],
    what: str,
    *,
    max_items: int,
    max_item_bytes: int,
    check: Callable[[BaseModel], str | None] = problem_of,
) -> tuple[list[tuple[int, M]], list[Refusal]]:
    """Validate each item of an upload on its own: the good ones with their index, and a
    refusal with its reason for each bad one.

    Items are validated in JSON mode (they arrived as JSON), so ``bytes`` fields are base64
    as the wire models declare.

    Raises:
        BadInputError: more than ``max_items`` items (nothing is stored; send fewer).
    """
    if len(items) > max_items:
        raise BadInputError(
            f"{len(items)} {what} in one request, over the limit of {max_items} "
            "(TETHER_CONTROLPLANE_UPLOAD_MAX_ITEMS); nothing was stored: send smaller batches"
        )
    parsed: list[tuple[int, M]] = []
    refused: list[Refusal] = []
    for index, item in enumerate(items):
        item_id = item.get("id") if isinstance(item, dict) else None
        item_id = item_id if isinstance(item_id, str) else None
        if not isinstance(item, dict):
            refused.append(Refusal(index, f"expected a JSON object, got {type(item).__name__}"))
            continue
        text = _without_nul(_to_json(item))
        if len(text) > max_item_bytes:
            refused.append(
                Refusal(
                    index,
                    f"{len(text):,} bytes, over the limit of {max_item_bytes:,} per item "
                    "(TETHER_CONTROLPLANE_UPLOAD_MAX_ITEM_BYTES)",
                    item_id,
                )
            )
            continue
        try:
            value = model.model_validate_json(text)
        except ValidationError as err:
            refused.append(Refusal(index, describe_validation_error(err), item_id))
            continue
        problem = check(value)
        if problem is not None:
            refused.append(Refusal(index, problem, item_id))
            continue
        parsed.append((index, value))
    return parsed, refused


def _to_json(item: dict[str, Any]) -> bytes:
    """``item`` as JSON (pydantic-core's encoder: a few times faster than ``json.dumps`` on
    the megabytes of base64 a log upload carries). A non-finite float becomes an invalid
    number on purpose, so validation names its field instead of taking null for it."""
    try:
        return pydantic_core.to_json(item, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError:
        # A lone surrogate (a JSON "\ud800" escape): json.dumps escapes it back, and
        # validation then names the field.
        return json.dumps(item).encode()


#: A JSON ``\u0000`` escape that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _without_nul(text: bytes) -> bytes:
    """Replace NUL characters in a JSON document's strings with U+FFFD.

    PostgreSQL text cannot hold NUL, and user code may print anything; refusing (or
    endlessly retrying) a batch over one character would lose far more than the character.
    """
    return _NUL_ESCAPE.sub(rb"\1\\ufffd", text) if b"\\u0000" in text else text


def single(model: type[M], item: Any, what: str, *, max_item_bytes: int) -> M:
    """One uploaded item (a heartbeat), validated and bounded.

    Raises:
        BadInputError: it is malformed or out of bounds.
    """
    parsed, refused = parse_items(model, [item], what, max_items=1, max_item_bytes=max_item_bytes)
    if refused:
        raise BadInputError(f"malformed {what}: {refused[0].reason}")
    return parsed[0][1]

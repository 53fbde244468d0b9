"""Strict decoding of JSON request bodies: UTF-8 only, bounded nesting, clear errors.

``json.loads`` on raw bytes raises ``UnicodeDecodeError`` for invalid UTF-8 and
``RecursionError`` for ~100k nested ``[``; neither is a ``JSONDecodeError``, so a web
framework turns them into a 500 with a traceback. Here each is a :class:`JsonBodyError`
naming what is wrong, and a document nested deeper than the limit is refused even when
the parser could cope, so no later recursive walk over it (GraphQL value coercion, the
JSON scalar, storing it) can fail on depth.
"""

from __future__ import annotations

import json


class JsonBodyError(ValueError):
    """A request body that is not acceptable JSON; the message says why (for a 400)."""


def decode_json_body(data: str | bytes, *, max_depth: int) -> object:
    """Decode ``data`` as JSON.

    Args:
        data: the body (bytes must be UTF-8).
        max_depth: deepest nesting of arrays and objects accepted.

    Raises:
        JsonBodyError: invalid UTF-8, invalid JSON, or nesting deeper than ``max_depth``.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonBodyError(
                f"the request body is not valid UTF-8 (byte {err.start}): send JSON as UTF-8"
            ) from None
    else:
        text = data
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonBodyError(
            f"the JSON body is nested too deeply (the limit is {max_depth} levels)"
        ) from None
    except json.JSONDecodeError as err:
        raise JsonBodyError(f"the request body is not valid JSON: {err}") from None
    depth = json_depth(value)
    if depth > max_depth:
        raise JsonBodyError(
            f"the JSON body is nested {depth} levels deep; the limit is {max_depth} "
            "(TETHER_CONTROLPLANE_MAX_JSON_DEPTH)"
        )
    return value


def json_depth(value: object) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0, ``[]`` is 1), iteratively."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest

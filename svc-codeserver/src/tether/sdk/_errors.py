"""Errors the SDK raises on purpose."""

from __future__ import annotations

from tether.shared.errors import TetherError


class DefinitionError(TetherError, ValueError):
    """An op, job or Definitions object is malformed (raised at decoration time)."""

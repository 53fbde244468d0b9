"""Shapes of a Tether stack for the scale workload: how many API replicas and launchers."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SHAPE = re.compile(r"^tether-(\d+)x(\d+)$")


@dataclass(frozen=True)
class Shape:
    """How many control plane API replicas and launchers a stack runs."""

    api_replicas: int
    launchers: int

    def __post_init__(self) -> None:
        if self.api_replicas < 1 or self.launchers < 1:
            raise ValueError(f"a shape needs at least 1 API replica and 1 launcher: {self}")

    @property
    def name(self) -> str:
        """The system's name: ``tether-<replicas>x<launchers>``."""
        return f"tether-{self.api_replicas}x{self.launchers}"

    @classmethod
    def parse(cls, name: str) -> Shape | None:
        """``tether-3x2`` -> Shape(3, 2); None when ``name`` is no shape's name.

        Raises:
            ValueError: a shape's name with a zero count.
        """
        found = _SHAPE.match(name)
        if found is None:
            return None
        return cls(int(found.group(1)), int(found.group(2)))

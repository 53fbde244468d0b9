"""``tether dev``: the whole stack on embedded defaults, for newcomers and tests."""

from tether.dev.stack import DevStack, StackConfig

__all__ = ["DevStack", "StackConfig"]

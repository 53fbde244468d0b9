"""Fixtures of the launcher's tests."""

from __future__ import annotations

import importlib.util

import pytest
from tether.shared.testing import skip_or_fail


@pytest.fixture(autouse=True)
def _needs_codeserver() -> None:
    """Code servers and run workers come from tether-codeserver; say so when it is missing."""
    if importlib.util.find_spec("tether.codeserver") is None:
        skip_or_fail("tether-codeserver (code server, run worker)")

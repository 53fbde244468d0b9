"""Fixtures of the launcher's tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from tether.testing import skip_or_fail

# The tests import launcher_testkit as a plain module (--import-mode=importlib puts no
# test directory on sys.path by itself).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _needs_codeserver() -> None:
    """Code servers and run workers come from tether-codeserver; say so when it is missing."""
    if importlib.util.find_spec("tether.codeserver") is None:
        skip_or_fail("tether-codeserver (code server, run worker)")

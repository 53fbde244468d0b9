"""Fixtures of the poller's tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.testing import free_port

sys.path.insert(0, str(Path(__file__).parent))

from poller_fixtures import WorkQueueEndpoint


@pytest.fixture
def endpoint() -> Iterator[WorkQueueEndpoint]:
    """A running fake agent API on a free port."""
    ep = WorkQueueEndpoint(free_port())
    ep.start()
    yield ep
    ep.stop()

"""Fixtures shared by every test directory: real servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.testing import NatsServer, start_nats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh NATS server with JetStream and JWT auth (this session's operator and
    account) on a free port, with a temp store dir; clients need credentials
    (``nats_server.creds``, ``.credentials_for(role)``, ``.connect()``)."""
    server = start_nats(tmp_path)
    yield server
    server.stop()

"""Fixtures shared by every test directory: real servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.shared.testing import NatsServer, free_port, spawn_nats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh NATS server with JetStream on a free port and a temp store dir."""
    port = free_port()
    store = tmp_path / "nats"
    server = NatsServer(f"nats://127.0.0.1:{port}", port, store, spawn_nats(port, store))
    yield server
    server.stop()

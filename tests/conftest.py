"""Fixtures for cross-service tests: a whole local stack, as `tether dev` runs it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from otlp_receiver import OtlpReceiver
from tether.testing import free_port

from tether.dev.stack import DevStack, StackConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver every process of the stack exports to."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[DevStack]:
    """The whole stack with the example location, on free ports in a temp home."""
    home = tmp_path_factory.mktemp("tether-home")
    config = StackConfig(
        home=home,
        port=free_port(),
        nats_port=free_port(),
        workspace_file=REPO / "examples" / "workspace.toml",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            # Tests add locations whose code is in temp directories (the agent's policy
            # allows code from the repository and from there only).
            "TETHER_LAUNCHER_LOCATION_POLICY": json.dumps(
                {"roots": [str(REPO), str(tmp_path_factory.getbasetemp())]}
            ),
        },
    )
    stack = DevStack(config)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        # Keep the services' logs next to the test artifacts for post-mortems.
        artifacts = REPO / "test-artifacts" / "e2e-logs"
        artifacts.mkdir(parents=True, exist_ok=True)
        for log in (home / "logs").glob("*.log"):
            (artifacts / log.name).write_bytes(log.read_bytes())

"""moto's S3 (and the other AWS APIs it fakes) as a real HTTP server on 127.0.0.1.

Tests that store in S3 (the logship's S3 sink, the S3 IO manager) talk to it with boto3
exactly as production talks to S3: ``endpoint_url=server.url`` and the fake credentials
of :data:`CREDENTIALS` in the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from tether.testing import skip_or_fail

__all__ = ["CREDENTIALS", "MotoServer"]

#: Credentials moto accepts; boto3's standard chain finds them in the environment.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class MotoServer:
    """A ``moto_server`` process (dev group: ``moto[server]``)."""

    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it answers (skip-or-fail if it cannot run)."""
        exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        if not Path(exe).exists():
            skip_or_fail("moto_server is not installed (dev group: moto[server])")
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS},
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                skip_or_fail(f"moto_server exited: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    skip_or_fail("moto_server did not answer within 30 s")
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def create_bucket(self, prefix: str = "bucket") -> str:
        """A new, empty bucket; returns its name."""
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")
        client.create_bucket(Bucket=name)
        return name

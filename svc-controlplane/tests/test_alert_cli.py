"""``tether alert list|create|test|deliveries|delete`` against a real control plane HTTP
server and a real webhook receiver."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from controlplane_testkit import serving
from tether.client.alert_cli import app
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.testing.alerts import HMAC_SECRET, http_receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def backend() -> str:
    # The CLI only talks GraphQL; the storage suites cover both databases.
    return "sqlite"


async def test_alert_commands(settings: ControlPlaneSettings, tmp_path: Path) -> None:
    async with serving(settings) as served:
        editor = await served.token("ed", auth.Role.EDITOR)
        viewer = await served.token("view", auth.Role.VIEWER)
        tether = functools.partial(served.cli, app, token=editor)

        with http_receiver() as hooks:
            channel = tmp_path / "channel.json"
            channel.write_text(
                json.dumps({"type": "webhook", "url": hooks.url(), "secret": HMAC_SECRET})
            )
            args = ["create", "failures", "--kind", "run_failure", "--channel", str(channel)]
            args += ["--job", "hello", "--tag", "team=data"]
            refused = await tether(*args, token=viewer)
            assert refused.exit_code == 1 and "FORBIDDEN" in refused.stderr
            created = await tether(*args)
            assert created.exit_code == 0, created.output
            assert "created alert policy 'failures'" in created.stdout

            listed = await tether("list", token=viewer)
            assert listed.exit_code == 0, listed.output
            assert "failures" in listed.stdout and "RUN_FAILURE -> webhook" in listed.stdout
            assert "jobName=hello" in listed.stdout
            as_json = await tether("list", "--json", token=viewer)
            assert HMAC_SECRET not in as_json.stdout and hooks.url() not in as_json.stdout
            (policy,) = json.loads(as_json.stdout)
            assert policy["filters"] == {"jobName": "hello", "tags": {"team": "data"}}

            tested = await tether("test", "failures")
            assert tested.exit_code == 0, tested.output
            (received,) = hooks.received
            assert hooks.signature_ok(received) and received.json["event"] == "TEST"

            log = await tether("deliveries", "--policy", "failures", token=viewer)
            assert log.exit_code == 0, log.output
            assert "SENT" in log.stdout and "Test alert of policy failures" in log.stdout

        # The receiver is gone: the test alert fails, and says why.
        failed = await tether("test", policy["id"])
        assert failed.exit_code == 1 and "ConnectError" in failed.stderr

        bad = tmp_path / "bad.json"
        bad.write_text('{"type": "webhook", "url": "http://x"}')
        refused = await tether("create", "bad", "--kind", "RUN_FAILURE", "--channel", str(bad))
        assert refused.exit_code == 1 and "BAD_INPUT" in refused.stderr
        unknown = await tether("create", "x", "--kind", "NOPE", "--channel", str(channel))
        assert unknown.exit_code == 2 and "unknown kind" in unknown.output

        deleted = await tether("delete", "failures")
        assert deleted.exit_code == 0, deleted.output
        assert (await tether("list")).stdout == ""
        missing = await tether("delete", "failures")
        assert missing.exit_code == 1 and "no alert policy" in missing.stderr

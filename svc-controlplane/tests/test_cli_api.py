"""``tether location ...`` and ``tether run ...`` against a real control plane HTTP server."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from controlplane_testkit import example_snapshot, serving
from tether.client import run_cli, token_cli
from tether.client.backfill_cli import app as backfill_app
from tether.client.location_cli import app as location_app
from tether.client.run_cli import app as run_app
from tether.client.token_cli import app as token_app
from tether.controlplane.errors import BadInputError
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import locations
from tether.shared.agent_client import AgentClient
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import WorkKind, WorkResult

pytestmark = pytest.mark.integration


SECRET = "hunter2-Is-A-Secret"


async def test_location_and_run_commands_through_the_api(
    settings: ControlPlaneSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with serving(settings, daemons=True) as served:
        url = served.url
        admin = await served.token("adm", auth.Role.ADMIN)
        editor = await served.token("ed", auth.Role.EDITOR)
        viewer = await served.token("view", auth.Role.VIEWER)

        async def stored_env(name: str) -> dict[str, str]:
            async with served.cp.db.reading() as session:
                row = await locations.get_location(session, "default", name)
            assert row is not None
            return dict(row.config["env"])

        tether = functools.partial(served.cli, token=editor)

        async def ok(app: Any, *args: str, token: str = editor) -> Any:
            result = await tether(app, *args, token=token)
            assert result.exit_code == 0, (args, result.output)
            return result

        async def refused(app: Any, *args: str, token: str = editor) -> str:
            result = await tether(app, *args, token=token)
            assert result.exit_code == 1, (args, result.output)
            assert result.stderr.startswith("error: ") and not result.stdout
            return str(result.stderr)

        # Locations: the workspace's two, then one added, updated and refused. Changing
        # locations takes an admin token; an editor may only reload them.
        listed = await ok(location_app, "list")
        assert "loc" in listed.stdout and "boxed" in listed.stdout and "LOADING" in listed.stdout
        env_file = tmp_path / "extra.env"
        env_file.write_text(f"# secrets of extra\nPASSWORD={SECRET}\n")
        added = await ok(
            location_app, "add", "extra", "--module", "m", "--env", "A=1",
            "--env-file", str(env_file), token=admin,
        )  # fmt: skip
        assert added.stdout == "added code location 'extra' (LOADING)\n"
        taken = await refused(location_app, "add", "extra", "--module", "m", token=admin)
        assert "ALREADY_EXISTS" in taken
        bad = await refused(location_app, "add", "y", "--config-json", '{"module": 1}', token=admin)
        assert "BAD_INPUT" in bad and "module" in bad
        assert (await tether(location_app, "add", "z", "--env", "novalue")).exit_code == 2
        no_file = await tether(location_app, "add", "z", "--env-file", str(tmp_path / "nope"))
        assert no_file.exit_code == 2 and "--env-file" in _plain(no_file.output)
        forbidden = await refused(location_app, "add", "z", "--module", "m")
        assert "FORBIDDEN" in forbidden and "needs an admin token" in forbidden
        for command in (["update", "extra", "--module", "x"], ["remove", "extra"]):
            assert "FORBIDDEN" in await refused(location_app, *command)
            assert "FORBIDDEN" in await refused(location_app, *command, token=viewer)
        await ok(
            location_app, "update", "extra", "--python-file", "f.py", "--env", "B=2", token=admin
        )
        by_name = {
            loc["name"]: loc
            for loc in json.loads((await ok(location_app, "list", "--json")).stdout)
        }
        assert by_name["extra"]["config"]["python_file"] == "f.py"
        assert by_name["extra"]["config"]["module"] is None
        # Values are write-only, for every role; the update kept the ones it did not touch.
        assert by_name["extra"]["config"]["env"] == {"A": "***", "PASSWORD": "***", "B": "***"}
        for token in (viewer, editor, admin):
            for args in (["list"], ["list", "--json"]):
                assert SECRET not in (await ok(location_app, *args, token=token)).stdout
        assert await stored_env("extra") == {"A": "1", "PASSWORD": SECRET, "B": "2"}
        await ok(location_app, "update", "extra", "--unset-env", "A", token=admin)
        assert await stored_env("extra") == {"PASSWORD": SECRET, "B": "2"}
        assert "NOT_FOUND" in await refused(
            location_app, "update", "nope", "--module", "m", token=admin
        )
        removed = await ok(location_app, "remove", "extra", token=admin)
        assert removed.stdout == "removed code location 'extra'\n"
        reloading = await ok(location_app, "reload", "loc")
        assert "reloading code location 'loc'" in reloading.stdout

        async with AgentClient(url, served.agent_token) as agent:
            # Answer the load of "loc" (the latest one queued) with a snapshot of job hello.
            items = await agent.claim_work("a1", ["process"], wait_s=1)
            loads = [
                i for i in items if i.kind == WorkKind.LOAD_LOCATION and i.location.name == "loc"
            ]
            payload = {"snapshot": example_snapshot().model_dump(mode="json")}
            await agent.submit_results(
                [
                    WorkResult(id=i.id, work_item_id=i.id, kind=i.kind, ok=True, payload=payload)
                    for i in loads
                ]
            )
            listed = await ok(location_app, "list")
            assert "LOADED" in listed.stdout and "hello" in listed.stdout

            # Runs: a bad config is refused with the schema's errors, a good one launched.
            invalid = await refused(
                run_app, "launch", "hello", "--location", "loc", "--config-json", '{"ops": 1}'
            )
            assert "RunConfigValidationInvalid" in invalid
            assert "ops: 1 is not of type 'object'" in invalid
            launched = await ok(
                run_app,
                "launch",
                "hello",
                "--location",
                "loc",
                "--config-json",
                '{"ops": {"a": {"n": 1}}}',
                "--tag",
                "team=data",
            )
            run_id = launched.stdout.strip()
            assert "launched run" in launched.stderr
            assert "JobNotFoundError" in await refused(
                run_app, "launch", "nope", "--location", "loc"
            )
            assert "FORBIDDEN" in await refused(
                run_app, "launch", "hello", "--location", "loc", token=viewer
            )

            # Its worker starts and writes logs (through the agent API).
            await agent.store_events(
                [RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START)]
            )
            await agent.append_compute_logs(
                [
                    LogChunk(
                        run_id=run_id,
                        step_key="a",
                        stream=LogStream.STDOUT,
                        offset=0,
                        data=b"one\n",
                    ),
                    LogChunk(
                        run_id=run_id,
                        step_key="a",
                        stream=LogStream.STDOUT,
                        offset=4,
                        data=b"two\n",
                    ),
                    LogChunk(
                        run_id=run_id,
                        step_key="b",
                        stream=LogStream.STDERR,
                        offset=0,
                        data=b"oops\n",
                    ),
                ]
            )
            tagged = json.loads((await ok(run_app, "list", "--tag", "team=data", "--json")).stdout)
            assert [(r["id"], r["status"]) for r in tagged] == [(run_id, "STARTED")]
            assert (
                await ok(run_app, "list", "--tag", "team=other", "--json")
            ).stdout.strip() == "[]"
            table = await ok(run_app, "list", "--status", "started", "--job", "hello", token=viewer)
            assert run_id in table.stdout and "team=data" in table.stdout
            assert (await tether(run_app, "list", "--status", "bogus")).exit_code == 2

            # Logs are read in bounded answers (here of 3 bytes), joined back seamlessly.
            monkeypatch.setattr(run_cli, "_READ_BYTES", 3)
            logs = await ok(run_app, "logs", run_id, token=viewer)
            assert logs.stdout == "a:stdout | one\na:stdout | two\nb:stderr | oops\n"
            raw = await ok(run_app, "logs", run_id, "--step", "a", "--stream", "stdout")
            assert raw.stdout == "one\ntwo\n"

            terminated = await ok(run_app, "terminate", run_id)
            assert terminated.stdout == f"run {run_id} is CANCELING\n"
            # The worker writes more, then ends; --follow prints everything once and stops.
            await agent.append_compute_logs(
                [
                    LogChunk(
                        run_id=run_id,
                        step_key="a",
                        stream=LogStream.STDOUT,
                        offset=8,
                        data=b"bye\n",
                    )
                ]
            )
            await agent.store_events(
                [RunEvent(run_id=run_id, seq=2, event_type=EventType.RUN_CANCELED)]
            )
            followed = await ok(run_app, "logs", run_id, "--follow", "--stream", "stdout")
            assert followed.stdout == "a:stdout | one\na:stdout | two\na:stdout | bye\n"
            assert "RunAlreadyFinishedError" in await refused(run_app, "terminate", run_id)
            assert "RunNotFoundError" in await refused(run_app, "terminate", "no-such-run")
            assert "NOT_FOUND" in await refused(run_app, "logs", "no-such-run")

            # --wait polls until the run ends; a run canceled while queued exits 1.
            # (A real `tether run` process: CliRunner swaps sys.stdout, so two cannot overlap.)
            waiting = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tether.shared.runtime.cli",
                "run",
                "launch",
                "hello",
                "--location",
                "loc",
                "--wait",
                "--poll-interval",
                "0.05",
                env={**os.environ, "TETHER_CONTROL_PLANE_URL": url, "TETHER_TOKEN": editor},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            while True:
                runs = json.loads((await ok(run_app, "list", "--json")).stdout)
                if len(runs) == 2:
                    break
                await asyncio.sleep(0.05)
            await ok(run_app, "terminate", runs[0]["id"])
            stdout, stderr = await asyncio.wait_for(waiting.communicate(), 60)
            assert waiting.returncode == 1, stderr
            assert "ended CANCELED" in stderr.decode()
            assert stdout.decode().strip() == runs[0]["id"]

        # Removing the location keeps its runs; launching on it is refused.
        await ok(location_app, "remove", "loc", token=admin)
        assert len(json.loads((await ok(run_app, "list", "--json")).stdout)) == 2
        gone = await refused(run_app, "launch", "hello", "--location", "loc")
        assert "LocationNotLoadedError: no code location named 'loc'" in gone


def _plain(output: str) -> str:
    """CLI output without rich's error box, its lines joined (it wraps long messages)."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", output).split())


API_APPS = {"location": location_app, "run": run_app, "backfill": backfill_app, "token": token_app}


def test_the_clients_roles_are_the_control_planes() -> None:
    """``tether token create --role`` reads roles as the control plane's ``Role.parse``."""
    given = [*token_cli.ROLES, *token_cli.ROLE_ALIASES, " Launcher ", "ADMIN"]
    for value in given:
        assert token_cli._role(value) == auth.Role.parse(value).name
    with pytest.raises(BadInputError) as server:
        auth.Role.parse("root")
    with pytest.raises(typer.BadParameter) as client:
        token_cli._role("root")
    assert client.value.message == server.value.message


async def test_the_token_comes_from_the_environment_or_a_file(
    settings: ControlPlaneSettings, tmp_path: Path
) -> None:
    async with serving(settings, daemons=True) as served:
        url = served.url
        admin = await served.token("adm", auth.Role.ADMIN)
        viewer = await served.token("view", auth.Role.VIEWER)
        admin_file, viewer_file, empty = (tmp_path / n for n in ("admin", "viewer", "empty"))
        admin_file.write_text(f"{admin}\n")
        viewer_file.write_text(viewer)
        empty.write_text("\n")
        for path in (admin_file, viewer_file, empty):
            os.chmod(path, 0o600)

        async def tether(app: Any, *args: str, **env: str | None) -> Any:
            # CliRunner: None unsets a variable, so the test's own environment cannot leak in.
            return await served.cli(app, *args, token=None, env={"TETHER_TOKEN_FILE": None, **env})

        async def lists_tokens(*args: str, **env: str | None) -> bool:
            """Whether ``tether token list`` (admin only) worked with this token source."""
            result = await tether(token_app, "list", *args, **env)
            assert result.exit_code in (0, 1), result.output
            return result.exit_code == 0 and "adm" in result.stdout

        assert not await lists_tokens()  # no token at all: UNAUTHENTICATED
        assert await lists_tokens("--token-file", str(admin_file))
        assert await lists_tokens(TETHER_TOKEN_FILE=str(admin_file))
        assert await lists_tokens(TETHER_TOKEN=admin)
        assert not await lists_tokens(TETHER_TOKEN=viewer)  # FORBIDDEN: the viewer's is used
        # A file named on the command line wins over TETHER_TOKEN, which wins over
        # TETHER_TOKEN_FILE.
        assert await lists_tokens("--token-file", str(admin_file), TETHER_TOKEN=viewer)
        assert await lists_tokens(TETHER_TOKEN=admin, TETHER_TOKEN_FILE=str(viewer_file))
        quiet = await tether(token_app, "list", "--token-file", str(admin_file))
        assert "warning" not in quiet.stderr
        os.chmod(admin_file, 0o644)  # readable by others: used, with a warning
        loud = await tether(token_app, "list", "--token-file", str(admin_file))
        assert loud.exit_code == 0 and "adm" in loud.stdout
        assert "may be read by others (mode 644); chmod 600" in loud.stderr
        for path, why in ((empty, "is empty"), (tmp_path / "missing", "cannot read token file")):
            result = await tether(token_app, "list", "--token-file", str(path))
            assert result.exit_code == 2 and why in _plain(result.output)

        # A token on the command line is refused by every command, before any request.
        for group, app in API_APPS.items():
            for args in (["list", "--token", admin], ["list", f"--token={admin}"]):
                result = await tether(app, *args)
                assert result.exit_code == 2, (group, result.output)
                assert "not accepted" in _plain(result.output)
                assert "TETHER_TOKEN" in _plain(result.output)
                assert admin not in result.output
        # ... also through the `tether` command itself.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tether.shared.runtime.cli", "token", "list", "--token", admin,
            env={**os.environ, "TETHER_CONTROL_PLANE_URL": url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2 and b"not accepted" in stderr and admin.encode() not in stdout

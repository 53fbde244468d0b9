"""The launcher mints each run worker a NATS user of its own run, from its settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from launcher_testkit import EXAMPLES_LOCATION, launcher_settings, open_bus, running, work_item
from tether.launcher import LauncherSettings
from tether.launcher.runcreds import RunCredentials, RunCredentialsError
from tether.shared.nats import auth as natsauth
from tether.shared.nats import claims as natsclaims
from tether.shared.nats import perms as natsperms
from tether.shared.nats import subjects
from tether.shared.nats.connection import connect_nats
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import new_id
from tether.shared.wire.runs import EventType
from tether.shared.wire.work import WorkKind
from tether.testing import NatsServer


def test_without_nats_auth_runs_get_no_credentials() -> None:
    assert RunCredentials.from_settings(LauncherSettings()).env_for(new_id()) == {}


def test_half_configured_auth_is_refused_with_the_missing_setting_named(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    auth = nats_server.launcher_settings()
    with pytest.raises(RunCredentialsError, match="SIGNING_KEY_FILE"):
        RunCredentials.from_settings(LauncherSettings(nats_credentials=auth["nats_credentials"]))
    with pytest.raises(RunCredentialsError, match="TETHER_NATS_CREDENTIALS"):
        RunCredentials.from_settings(
            LauncherSettings(nats_account_signing_key_file=auth["nats_account_signing_key_file"])
        )
    garbage = tmp_path / "key.nk"
    garbage.write_text("not a seed")
    with pytest.raises(RunCredentialsError, match="cannot read"):
        RunCredentials.from_settings(
            LauncherSettings(
                nats_credentials=auth["nats_credentials"], nats_account_signing_key_file=garbage
            )
        )


async def test_minted_credentials_publish_their_runs_events_only(
    nats_server: NatsServer,
) -> None:
    """From files (tether dev, k8s) and from text (ECS secrets in the environment)."""
    files = nats_server.launcher_settings()
    as_text = LauncherSettings(
        nats_url=nats_server.url,
        nats_credentials_text=files["nats_credentials"].read_text(),
        nats_account_signing_key=files["nats_account_signing_key_file"].read_text(),
        run_credentials_ttl_s=120,
    )
    admin = await nats_server.connect()
    await admin.jetstream().add_stream(name=str(Stream.EVENTS), subjects=[subjects.events_all()])
    for settings in (LauncherSettings(**files), as_text):
        run_id = new_id()
        env = RunCredentials.from_settings(settings).env_for(run_id)
        creds = env[natsauth.RUN_WORKER_CREDENTIALS_ENV]
        claims = natsclaims.decode_jwt(natsauth.creds_jwt(creds))
        assert claims["nats"]["tags"] == [f"{natsperms.RUN_TAG}:{run_id}"]
        nc = await connect_nats(nats_server.url, "worker", creds)
        assert (await nc.jetstream().publish(subjects.events(run_id), b"{}")).stream
        await nc.close()
    assert as_text.run_credentials_ttl_s == 120
    await admin.close()


async def test_a_run_launched_by_the_launcher_reports_with_its_own_user(
    nats_server: NatsServer,
) -> None:
    """The whole path: the launcher (as its own role) mints the run's user, the worker
    publishes its events with it; argv carries no credentials (ExecuteRunArgs has none)."""
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    async with open_bus(nats_server.url, *streams) as bus:
        run_id = new_id()
        launch = work_item(WorkKind.LAUNCH_RUN, EXAMPLES_LOCATION, run_id=run_id, job_name="hello")
        async with running(launcher_settings(nats_server.url)):
            await bus.send(launch)
            exited = await bus.result(lambda r: r.id == f"{launch.id}.exit")
        events = await bus.events(run_id)
    assert exited.ok and exited.payload == {"run_id": run_id, "exit_code": 0}
    assert EventType.RUN_SUCCESS in [e.event_type for e in events]

"""NATS refuses clients without valid credentials and holds each user to its allow lists.

Against a real nats-server in operator mode (the ``nats_server`` fixture), with users
issued the way the launcher and ``tether nats-auth init`` issue them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client, RawCredentials
from nats.js.api import KeyValueConfig
from tether.shared.nats import auth as natsauth
from tether.shared.nats import claims as natsclaims
from tether.shared.nats import perms as natsperms
from tether.shared.nats import subjects
from tether.shared.nats.auth import AgentAuth
from tether.shared.nats.connection import connect_nats
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Bucket, Stream
from tether.shared.wire.base import new_id
from tether.shared.wire.work import WorkKind
from tether.testing import NatsServer

pytestmark = pytest.mark.integration


async def _refused(server: NatsServer, **options: object) -> str:
    """Connect once with ``options``; return the server's refusal."""
    with pytest.raises(nats.errors.Error) as caught:
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0, **options)
    return str(caught.value)


async def test_a_client_without_credentials_is_refused(nats_server: NatsServer) -> None:
    assert "Authorization Violation" in await _refused(nats_server)


async def test_a_user_of_another_operator_is_refused(nats_server: NatsServer) -> None:
    stranger = AgentAuth.create().minter().mint("intruder", natsperms.admin(), ttl_s=60)
    refusal = await _refused(nats_server, user_credentials=RawCredentials(stranger))
    assert "Authorization Violation" in refusal


async def test_an_expired_user_is_refused(nats_server: NatsServer) -> None:
    run_id = new_id()
    expired = natsperms.mint_run_worker(
        nats_server.auth.minter(),  # type: ignore[union-attr]
        run_id,
        ttl_s=60,
        now=time.time() - 3600,
    )
    refusal = await _refused(nats_server, user_credentials=RawCredentials(expired))
    assert "Authorization Violation" in refusal or "Expired" in refusal
    # The same user, not yet expired, is let in (the refusal was the expiry).
    fresh = nats_server.run_worker_credentials(run_id)
    nc = await connect_nats(nats_server.url, "fresh", fresh)
    await nc.close()


class _Violations:
    """The permission violations the server reported to one connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._new = asyncio.Event()

    async def error_cb(self, err: Exception) -> None:
        self.seen.append(str(err))
        self._new.set()

    async def wait_for(self, fragment: str) -> None:
        """Until a violation mentioning ``fragment`` was reported (the test's timeout
        bounds the wait; a violation that never comes fails it)."""
        # nats-py lowercases the server's message, subject included.
        async with asyncio.timeout(10):
            while not any(fragment.lower() in seen.lower() for seen in self.seen):
                self._new.clear()
                await self._new.wait()


async def _as_run_worker(server: NatsServer, run_id: str) -> tuple[Client, _Violations]:
    violations = _Violations()
    creds = server.run_worker_credentials(run_id)
    assert creds is not None
    nc = await nats.connect(
        server.url,
        user_credentials=RawCredentials(creds),
        inbox_prefix=natsauth.inbox_prefix_of(creds),
        error_cb=violations.error_cb,
    )
    return nc, violations


async def _stored(admin: Client, stream: Stream, subject: str) -> int:
    info = await admin.jetstream().stream_info(str(stream), subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_a_run_worker_publishes_only_its_own_runs_events_and_logs(
    nats_server: NatsServer,
) -> None:
    admin = await nats_server.connect()
    js = admin.jetstream()
    for stream in (Stream.WORK, Stream.EVENTS, Stream.LOGS):
        await ensure_stream(js, STREAMS[stream])
    mine, other = new_id(), new_id()
    nc, violations = await _as_run_worker(nats_server, mine)
    try:
        worker_js = nc.jetstream()
        # Its own run: stored, the PubAck reaching its private inbox.
        assert (await worker_js.publish(subjects.events(mine), b"{}")).seq == 1
        await worker_js.publish(subjects.logs(mine, "step", "stdout"), b"out")

        forged = [
            subjects.events(other),
            subjects.logs(other, "step", "stdout"),
            subjects.work("process", WorkKind.LAUNCH_RUN),
            subjects.results(WorkKind.LAUNCH_RUN),
        ]
        for subject in forged:
            await nc.publish(subject, b"forged")
            await nc.flush()
            await violations.wait_for(f'publish to "{subject}"')
        assert await _stored(admin, Stream.EVENTS, subjects.events(other)) == 0
        assert await _stored(admin, Stream.LOGS, subjects.logs_of_run(other)) == 0
        assert await _stored(admin, Stream.WORK, subjects.work_all()) == 0
        assert await _stored(admin, Stream.EVENTS, subjects.events(mine)) == 1
    finally:
        await nc.close()
        await admin.close()


async def test_a_run_worker_reads_no_kv_bucket_and_no_one_elses_messages(
    nats_server: NatsServer,
) -> None:
    admin = await nats_server.connect()
    claims = await admin.jetstream().create_key_value(KeyValueConfig(bucket=str(Bucket.RUN_CLAIMS)))
    await claims.put("some-run", b"secret")
    nc, violations = await _as_run_worker(nats_server, new_id())
    try:
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await nc.jetstream(timeout=1).key_value(str(Bucket.RUN_CLAIMS))
        await violations.wait_for(
            subjects.js_api("STREAM.INFO", subjects.kv_stream(Bucket.RUN_CLAIMS))
        )
        # Nor by a direct get, nor by overwriting a key.
        direct = subjects.js_api("DIRECT.GET", subjects.kv_stream(Bucket.RUN_CLAIMS))
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request(direct, b'{"last_by_subj":"$KV.tether_run_claims.some-run"}', 1)
        await violations.wait_for(f'publish to "{direct}"')
        await nc.publish("$KV.tether_run_claims.some-run", b"overwritten")
        await nc.flush()
        await violations.wait_for('publish to "$KV.tether_run_claims.some-run"')
        assert (await claims.get("some-run")).value == b"secret"

        # It cannot listen to other runs' events, to work, or to another user's inbox.
        for subject in (subjects.events_all(), subjects.work_all(), "_INBOX.>"):
            await nc.subscribe(subject)
            await nc.flush()
            await violations.wait_for(f'subscription to "{subject}"')
        launcher_inbox = f"{subjects.inbox(natsperms.user_name('launcher'))}.>"
        await nc.subscribe(launcher_inbox)
        await nc.flush()
        await violations.wait_for(f'subscription to "{launcher_inbox}"')
    finally:
        await nc.close()
        await admin.close()


def test_run_users_are_signed_by_the_signing_key_for_the_account(
    nats_server: NatsServer,
) -> None:
    auth = nats_server.auth
    assert auth is not None
    run_id = new_id()
    creds = nats_server.run_worker_credentials(run_id, ttl_s=600)
    assert creds is not None
    claims = natsclaims.decode_jwt(natsauth.creds_jwt(creds))
    assert claims["iss"] == natsclaims.public_key(auth.signing_key) != auth.account_id
    assert claims["nats"]["issuer_account"] == natsauth.account_of(creds) == auth.account_id
    assert claims["exp"] - claims["iat"] == 600
    # No permissions of its own: the signing key's scope gives it its run's.
    assert "pub" not in claims["nats"] and claims["nats"]["tags"] == [f"run:{run_id}"]
    assert natsauth.inbox_prefix_of(creds) == subjects.inbox(f"run-{run_id}")


async def test_the_launchers_signing_key_mints_nothing_but_run_workers(
    nats_server: NatsServer,
) -> None:
    """A leaked signing key yields no admin and no work publisher: the server refuses
    its users that ask for permissions, and gives the others a run's events and logs."""
    auth = nats_server.auth
    assert auth is not None
    greedy = auth.minter().mint("greedy", natsperms.admin(), ttl_s=60)
    assert "Authorization Violation" in await _refused(
        nats_server, user_credentials=RawCredentials(greedy)
    )
    # Untagged (no run): it may publish nowhere, work included.
    violations = _Violations()
    untagged = auth.minter().mint("sneaky", None, ttl_s=60)
    nc = await nats.connect(
        nats_server.url, user_credentials=RawCredentials(untagged), error_cb=violations.error_cb
    )
    try:
        work = subjects.work("process", WorkKind.LAUNCH_RUN)
        await nc.publish(work, b"forged")
        await nc.flush()
        await violations.wait_for(f'publish to "{work}"')
    finally:
        await nc.close()
    # The scope is the run worker's declaration, with the run and inbox left to the user.
    scope = natsperms.run_worker_scope().permissions
    assert scope.publish == ("tether.events.{{tag(run)}}", "tether.logs.{{tag(run)}}.>")
    assert scope.subscribe == ("_INBOX.{{name()}}.>",)


def test_tether_nats_auth_init_writes_private_files_and_keeps_its_keys(tmp_path: Path) -> None:
    directory = tmp_path / "auth"
    first = natsperms.init_agent_auth(directory, ["process", "k8s"])
    assert directory.stat().st_mode & 0o777 == 0o700
    users = sorted(p.name for p in (directory / natsperms.USERS_DIR).iterdir())
    assert users == [
        "admin.creds",
        "eventrelay.creds",
        "launcher-k8s.creds",
        "launcher-process.creds",
        "logship.creds",
        "poller.creds",
    ]
    for path in [*directory.iterdir(), *(directory / natsperms.USERS_DIR).iterdir()]:
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o600, path
    again = natsperms.init_agent_auth(directory, ["process"])
    assert again.account_id == first.account_id
    creds = (directory / natsperms.USERS_DIR / "poller.creds").read_text()
    assert natsauth.account_of(creds) == first.account_id


async def test_a_server_started_from_init_files_serves_each_service_its_user(
    tmp_path: Path,
) -> None:
    """What `tether nats-auth init` writes is what a NATS server and services need."""
    from tether.testing import free_port, spawn_nats

    directory = tmp_path / "auth"
    natsperms.init_agent_auth(directory)
    port = free_port()
    proc = spawn_nats(port, tmp_path / "store", directory / natsauth.SERVER_CONFIG)
    try:
        creds = directory / natsperms.USERS_DIR / "poller.creds"
        nc = await connect_nats(f"nats://127.0.0.1:{port}", "poller", creds)
        await ensure_stream(nc.jetstream(), STREAMS[Stream.WORK])
        await nc.close()
    finally:
        proc.terminate()
        proc.wait(10)

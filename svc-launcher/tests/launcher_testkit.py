"""What the launcher's tests share: a test-side NATS connection, launcher settings, a running
launcher service, work items and the example code location.

Imported as a plain module (``from launcher_testkit import Bus``): this directory's
conftest.py puts it on ``sys.path``, since the tests run with ``--import-mode=importlib``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from tether.launcher import LauncherService, LauncherSettings
from tether.launcher.consumer import consumer_name
from tether.launcher.policy import LocationPolicy, PolicyContext
from tether.launcher.userenv import UserCode
from tether.shared.nats import subjects
from tether.shared.nats.streams import STREAMS, ensure_stream, fetch_ready
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, encode, new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import RunEvent
from tether.shared.wire.signing import WorkSigner
from tether.shared.wire.work import WorkItem, WorkKind, WorkResult
from tether.testing import nats_connect, server_at

ROOT = Path(__file__).resolve().parents[2]
"""The repository (the uv workspace's root)."""

EXAMPLES = ROOT / "examples"
"""The repository's examples directory (the ``example_jobs`` module lives there)."""

EXAMPLES_LOCATION = LocationConfig(
    name="examples", module="example_jobs", working_directory=str(EXAMPLES)
)
"""The example jobs as a code location served by the process substrate."""


SIGNER = WorkSigner.generate()
"""Signs the tests' work items as a control plane would; :func:`launcher_settings` pins it."""

PINNED: dict[str, object] = {"work_public_keys": [SIGNER.public_key]}
"""Launcher settings fields that pin :data:`SIGNER`'s public key."""
CODESERVER_SECRET = secrets.token_hex(32)
"""The code-server secret of launchers under test (unless a test gives another)."""
TEST_POLICY = LocationPolicy(roots=[str(ROOT), tempfile.gettempdir()])
"""The location policy of launchers under test: code from the repository and temp dirs."""


def user_code_under_test(policy: LocationPolicy = TEST_POLICY) -> UserCode:
    """The process substrate's policy and env builder of tests (this process's env)."""
    return UserCode(policy, PolicyContext(substrate="process", cwd=os.getcwd()))


class _Default(enum.Enum):
    """Marks an argument left out: ``None`` is a meaningful value of it."""

    TOKEN = 0


DEFAULT = _Default.TOKEN


class Bus:
    """A test-side NATS connection: sends work items, collects results, events, dead letters.

    Attributes:
        nc: The NATS connection.
        js: Its JetStream context.
        results: Every result fetched so far, in the order they arrived.
        result_headers: The NATS headers of each fetched result, by result id.
    """

    def __init__(
        self,
        nc: nats.NATS,
        js: JetStreamContext,
        *,
        traceparent: str | None = None,
        result_timeout_s: float = 30.0,
        results_durable: str = "test-results",
    ) -> None:
        """Wrap a connection.

        Args:
            nc: The NATS connection.
            js: Its JetStream context.
            traceparent: The traceparent header sent with work items unless ``send`` is given
                one; ``None`` sends none.
            result_timeout_s: How long ``result`` waits unless given a timeout.
            results_durable: Name of the durable consumer that reads the RESULTS stream.
        """
        self.nc = nc
        self.js = js
        self.results: list[WorkResult] = []
        self.result_headers: dict[str, dict[str, str]] = {}
        self._traceparent = traceparent
        self._result_timeout_s = result_timeout_s
        self._results_durable = results_durable
        self._results_sub: JetStreamContext.PullSubscription | None = None

    async def declare(self, *streams: Stream) -> None:
        """Create (or update) ``streams`` as their owners would."""
        for name in streams:
            await ensure_stream(self.js, STREAMS[name])

    async def send(
        self,
        item: WorkItem,
        traceparent: str | None | _Default = DEFAULT,
        *,
        msg_id: str | None = None,
    ) -> None:
        """Publish ``item`` to the WORK stream, deduplicated by its id.

        Args:
            item: The work item.
            traceparent: The traceparent header to send; the Bus's default when left out,
                none when ``None``.
            msg_id: The ``Nats-Msg-Id`` header; the item's id when left out.
        """
        if traceparent is DEFAULT:
            traceparent = self._traceparent
        headers = {"Nats-Msg-Id": msg_id or item.id}
        if traceparent:
            headers["traceparent"] = traceparent
        await self.js.publish(
            subjects.work(item.location.substrate, item.kind), encode(item), headers=headers
        )

    async def result(
        self, predicate: Callable[[WorkResult], bool], timeout_s: float | None = None
    ) -> WorkResult:
        """The first result matching ``predicate``, fetching (and acking) as needed.

        Args:
            predicate: Says which result is wanted; results already fetched count too.
            timeout_s: How long to wait; the Bus's default when ``None``.

        Raises:
            TimeoutError: No matching result within the timeout.
        """
        # One subscription for the whole test: a second one on the same durable would
        # leave the first one's lingering pull request orphaned, and a result delivered
        # to it would only come back after the consumer's ack wait (30 s).
        if self._results_sub is None:
            self._results_sub = await self.js.pull_subscribe(
                subjects.results_all(), durable=self._results_durable, stream=str(Stream.RESULTS)
            )
        sub = self._results_sub
        async with asyncio.timeout(self._result_timeout_s if timeout_s is None else timeout_s):
            while True:
                for result in self.results:
                    if predicate(result):
                        return result
                try:
                    msgs = await sub.fetch(10, timeout=1)
                except TimeoutError:  # nats-py raises both its own and the builtin one
                    continue
                for msg in msgs:
                    result = decode(msg.data, WorkResult)
                    self.results.append(result)
                    self.result_headers[result.id] = dict(msg.headers or {})
                    await msg.ack()

    async def load(self, location: LocationConfig) -> WorkResult:
        """Send a load_location work item for ``location`` and wait for its result."""
        item = work_item(WorkKind.LOAD_LOCATION, location)
        await self.send(item)
        return await self.result(lambda r: r.id == item.id)

    async def drain(self, subject: str, stream: Stream) -> list[Msg]:
        """Every message of ``stream`` on ``subject`` (acked), once none came for a second."""
        sub = await self.js.pull_subscribe(subject, stream=str(stream))
        out: list[Msg] = []
        while True:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except TimeoutError:  # nats-py raises both its own and the builtin one
                return out
            for msg in msgs:
                out.append(msg)
                await msg.ack()

    async def events(self, run_id: str) -> list[RunEvent]:
        """The run events published for ``run_id`` so far (see ``drain``)."""
        msgs = await self.drain(subjects.events(run_id), Stream.EVENTS)
        return [decode(msg.data, RunEvent) for msg in msgs]

    async def dead_letters(self, count: int) -> list[Msg]:
        """The first ``count`` dead letters, waiting up to 20 s for them.

        Collected until there are ``count``: a single ``fetch(count)`` may return as soon
        as the first arrived, if a status message of the server ends its wait.
        """
        sub = await self.js.pull_subscribe(
            subjects.dead_letter_all(), stream=str(Stream.DEAD_LETTER)
        )
        letters: list[Msg] = []
        async with asyncio.timeout(20):
            while len(letters) < count:
                with contextlib.suppress(TimeoutError):
                    letters += await fetch_ready(sub, count - len(letters), timeout=5)
        return letters

    async def work_consumer_drained(self, substrate: str = "process") -> None:
        """Wait until the launchers of ``substrate`` acked or terminated every work message."""
        async with asyncio.timeout(30):
            while True:
                info = await self.js.consumer_info(str(Stream.WORK), consumer_name(substrate))
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                await asyncio.sleep(0.1)


@asynccontextmanager
async def open_bus(
    nats_url: str,
    *streams: Stream,
    traceparent: str | None = None,
    result_timeout_s: float = 30.0,
    results_durable: str = "test-results",
) -> AsyncIterator[Bus]:
    """A Bus on a new connection to ``nats_url``, with ``streams`` declared; closed after.

    Args:
        nats_url: The NATS server.
        *streams: Streams to create first (as their owning services would).
        traceparent: See ``Bus``.
        result_timeout_s: See ``Bus``.
        results_durable: See ``Bus``.
    """
    nc = await nats_connect(nats_url)
    try:
        js = nc.jetstream()
        for name in streams:
            await ensure_stream(js, STREAMS[name])
        yield Bus(
            nc,
            js,
            traceparent=traceparent,
            result_timeout_s=result_timeout_s,
            results_durable=results_durable,
        )
    finally:
        await nc.close()


def launcher_settings(nats_url: str, **overrides: object) -> LauncherSettings:
    """Settings of a launcher under test: short timeouts, four slots per kind group.

    Args:
        nats_url: The NATS server.
        **overrides: Settings fields that differ from these defaults.
    """
    substrate = str(overrides.get("substrate", "process"))
    values: dict[str, object] = {
        # The launcher's own NATS user and the signing key it mints run users with, so
        # every launcher test proves the launcher role's permissions sufficient.
        **server_at(nats_url).launcher_settings(substrate),
        "agent_id": "launcher-under-test",
        "code_server_start_timeout_s": 30.0,
        "grpc_deadline_s": 10.0,
        "terminate_grace_s": 3.0,
        "max_concurrency": 4,
        "result_publish_timeout_s": 30.0,
        "stream_wait_timeout_s": 10.0,
        "graceful_shutdown_timeout": 10.0,
        **PINNED,
        # Not the default file in the user's home: tests leave nothing behind there.
        "codeserver_secret": CODESERVER_SECRET,
        "location_policy": TEST_POLICY,
    }
    values.update(overrides)
    return LauncherSettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running(
    settings: LauncherSettings, timeout_s: float = 30.0
) -> AsyncIterator[LauncherService]:
    """A launcher service running in this event loop; shut down (and awaited) on exit.

    Args:
        settings: The launcher's settings.
        timeout_s: How long its shutdown may take before the test fails.
    """
    service = LauncherService(settings)
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.shutdown()
        await asyncio.wait_for(task, timeout_s)  # safety net against a hang only


def sign(item: WorkItem, *, deployment: str = "default", lifetime_s: float = 600.0) -> WorkItem:
    """``item`` as the control plane hands it out: for ``deployment``, expiring in
    ``lifetime_s`` (unless it expires sooner), signed with :data:`SIGNER`."""
    expires_at = time.time() + lifetime_s
    if item.expires_at is not None:
        expires_at = min(expires_at, item.expires_at)
    return SIGNER.sign(item.model_copy(update={"deployment": deployment, "expires_at": expires_at}))


def work_item(kind: WorkKind, location: LocationConfig, **payload: object) -> WorkItem:
    """A signed work item of ``kind`` for ``location`` with a fresh id and ``payload``."""
    return sign(WorkItem(id=new_id(), kind=kind, location=location, payload=payload))


def launcher_process_env(settings: LauncherSettings) -> dict[str, str]:
    """The environment that gives a launcher process ``settings``' fields that matter in
    these tests (the others keep their defaults)."""
    secret = settings.codeserver_secret
    env = {
        "NATS_URL": settings.nats_url,
        "AGENT_ID": settings.agent_id,
        "WORK_PUBLIC_KEYS": ",".join(settings.work_public_keys),
        "CODESERVER_SECRET": "" if secret is None else secret.get_secret_value(),
        "LOCATION_POLICY": settings.location_policy.model_dump_json(),
        "MAX_DELIVER": str(settings.max_deliver),
        "ACK_WAIT_S": str(settings.ack_wait_s),
        "HANDBACK_DELAY_S": str(settings.handback_delay_s),
        "TERMINATE_GRACE_S": str(settings.terminate_grace_s),
        "CODE_SERVER_START_TIMEOUT_S": str(settings.code_server_start_timeout_s),
        "HEARTBEAT_TTL_S": str(settings.heartbeat_ttl_s),
        "HEARTBEAT_REFRESH_S": str(settings.heartbeat_refresh_s),
        "WARM_START": str(settings.process.warm_start).lower(),
        "MAX_CONCURRENT_COLD_STARTS": str(settings.process.max_concurrent_cold_starts),
    }
    if settings.nats_credentials is not None:
        env["NATS_CREDENTIALS"] = str(settings.nats_credentials)
    if settings.nats_account_signing_key_file is not None:
        env["NATS_ACCOUNT_SIGNING_KEY_FILE"] = str(settings.nats_account_signing_key_file)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return base | {f"TETHER_LAUNCHER_{key}": value for key, value in env.items()}


class LauncherProcess:
    """A launcher in a process of its own (see :func:`launcher_process`).

    Attributes:
        process: the process started (``unshare`` when on another host).
    """

    def __init__(self, process: subprocess.Popen[bytes], *, unshared: bool) -> None:
        self.process = process
        self._unshared = unshared

    def pid(self, timeout_s: float = 10.0) -> int:
        """The launcher's pid as this host sees it (inside ``unshare``: its forked child,
        the namespace's init)."""
        if not self._unshared:
            return self.process.pid
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = children.read_text().split()
            if found:
                return int(found[0])
            time.sleep(0.02)
        raise TimeoutError("unshare started no launcher")

    def kill(self) -> None:
        """SIGKILL the launcher (no shutdown, no heartbeat delete): a crash or power loss."""
        os.kill(self.pid(), signal.SIGKILL)


@contextlib.contextmanager
def launcher_process(
    settings: LauncherSettings, *, hostname: str | None = None
) -> Iterator[LauncherProcess]:
    """A launcher process with ``settings``; with ``hostname``, in a pid and UTS namespace
    of its own (another host, as far as pids and the host name go; its namespace's
    processes all die with it). Stopped (SIGTERM) on exit if still running."""
    command = [sys.executable, "-m", "tether.launcher"]
    if hostname is not None:
        script = f'hostname {hostname} && exec "$0" -m tether.launcher'
        command = [
            *("unshare", "--pid", "--uts", "--fork", "--mount-proc", "--kill-child=SIGTERM"),
            *("sh", "-c", script, sys.executable),
        ]
    # Not a pipe: run workers inherit the launcher's stderr and outlive it (a pipe would
    # stay open until the last of them exits).
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command, env=launcher_process_env(settings), stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            yield LauncherProcess(process, unshared=hostname is not None)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
                stderr.seek(0)
                print(stderr.read().decode(errors="replace")[-4000:])

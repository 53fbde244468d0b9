"""Compute logs in the customer's S3 bucket: moto's S3 server, real NATS, and the real
control plane (a subprocess) for pointers and presigned URLs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.logship import LogShip, LogShipSettings, S3LogStore, S3Sink
from tether.logship.objectstore import object_key
from tether.logship.presign import Presigner
from tether.logship.sinks import contiguous_objects
from tether.shared.agent_client import AgentClient
from tether.shared.nats import subjects
from tether.shared.nats.headers import encode_log_chunk
from tether.shared.nats.perms import Role
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, encode
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.signing import WorkKeyError, WorkSigner, WorkVerifier
from tether.shared.wire.snapshots import (
    JobSnapshot,
    LocationSnapshot,
    OpSnapshot,
    RepositorySnapshot,
)
from tether.shared.wire.work import WorkItem, WorkKind, WorkResult
from tether.shared.wire.workspecs import ServedBy, kinds_served_by
from tether.testing import free_port, nats_connect, server_at, skip_or_fail
from tether.testing.moto import CREDENTIALS, MotoServer

# --- real parts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3's standard chain finds them in the environment, as in production.
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def _bucket(moto: MotoServer) -> str:
    return moto.create_bucket("logs")


def _objects(moto: MotoServer, bucket: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@dataclass
class ControlPlane:
    url: str
    token: str
    log: Path
    work_key: str

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        """A user-API call (the control plane runs with anonymous admin access)."""
        body = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        ).json()
        assert not body.get("errors"), body["errors"]
        return body["data"]


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if importlib.util.find_spec("tether.controlplane") is None:
        pytest.skip("tether-controlplane is not installed in this environment")
    tmp = tmp_path_factory.mktemp("cp")
    workspace = tmp / "workspace.toml"
    workspace.write_text('[[locations]]\nname = "loc"\nmodule = "jobs"\nsubstrate = "process"\n')
    port = free_port()
    token_file = tmp / "agent.token"
    env = {
        **os.environ,
        "TETHER_CONTROLPLANE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'cp.db'}",
        "TETHER_CONTROLPLANE_PORT": str(port),
        "TETHER_CONTROLPLANE_AGENT_TOKEN_FILE": str(token_file),
        "TETHER_CONTROLPLANE_WORKSPACE_FILE": str(workspace),
        "TETHER_CONTROLPLANE_ANONYMOUS_ROLE": "admin",
        "TETHER_CONTROLPLANE_WORK_SIGNING_KEY_FILE": str(tmp / "work-signing.key"),
    }
    log_path = tmp / "controlplane.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.shared.runtime.cli", "controlplane", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"control plane exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("control plane did not become healthy")
            time.sleep(0.1)
        work_key = WorkSigner.from_pem((tmp / "work-signing.key").read_bytes()).public_key
        cp = ControlPlane(url, token_file.read_text().strip(), log_path, work_key)
        asyncio.run(_load_location(cp))
        yield cp
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _load_location(cp: ControlPlane) -> None:
    """Answer the control plane's load of location ``loc`` (no launcher runs here)."""
    snapshot = LocationSnapshot(
        location_name="loc",
        repositories=[
            RepositorySnapshot(
                name="repo", jobs=[JobSnapshot(name="hello", ops=[OpSnapshot(name="a")])]
            )
        ],
    )
    async with AgentClient(cp.url, cp.token) as client:
        items = await client.claim_work("test-loader", ["process"], wait_s=5)
        (item,) = [i for i in items if i.kind == WorkKind.LOAD_LOCATION]
        await client.submit_results(
            [
                WorkResult(
                    id=item.id,
                    work_item_id=item.id,
                    kind=item.kind,
                    ok=True,
                    payload={"snapshot": snapshot.model_dump(mode="json")},
                )
            ]
        )


def _new_run(cp: ControlPlane) -> str:
    launched = cp.gql(
        """mutation { launchRun(locationName: "loc", jobName: "hello") {
             __typename ... on LaunchRunSuccess { run { id } } } }"""
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["id"]


STREAMS_QUERY = """query($id: String!) {
  computeLogStreams(runId: $id) { stepKey stream storage size objects location } }"""
URLS_QUERY = """query($id: String!, $step: String!, $stream: String!) {
  computeLogUrls(runId: $id, stepKey: $step, stream: $stream, timeoutSeconds: 30) {
    urls { offset length skip url } expiresAt hasMore } }"""
CHUNKS_QUERY = "query($id: String!) { run(id: $id) { computeLogs { stepKey text } } }"


def _settings(nats_url: str, cp: ControlPlane, **kw: Any) -> LogShipSettings:
    return LogShipSettings(
        nats_url=nats_url,
        nats_credentials=server_at(nats_url).credentials_for(Role.LOGSHIP),
        control_plane_url=cp.url,
        agent_token=cp.token,  # type: ignore[arg-type]
        work_public_keys=[cp.work_key],
        **kw,
    )


@pytest.fixture
async def dlq(nats_server) -> None:
    """The eventrelay's dead-letter stream, which the logship waits for."""
    nc = await nats_server.connect()
    await ensure_stream(nc.jetstream(), STREAMS[Stream.DEAD_LETTER])
    await nc.close()


@pytest.fixture
async def running() -> AsyncIterator[list[tuple[Any, asyncio.Task[None]]]]:
    """Services started by a test (shut down, and awaited, at its end)."""
    started: list[tuple[Any, asyncio.Task[None]]] = []
    yield started
    for service, _ in started:
        service.shutdown()
    for _, task in started:
        await asyncio.wait_for(task, 30)


def _start(running: list[tuple[Any, asyncio.Task[None]]], service: Any) -> None:
    running.append((service, asyncio.create_task(service.run())))


def _step_output(
    run_id: str, step: str, stream: LogStream, data: bytes, size: int
) -> list[LogChunk]:
    """``data`` cut into chunks of ``size`` bytes, as a run worker publishes them."""
    return [
        LogChunk(run_id=run_id, step_key=step, stream=stream, offset=i, data=data[i : i + size])
        for i in range(0, len(data), size)
    ]


async def _publish(nats_url: str, chunks: list[LogChunk]) -> None:
    nc = await nats_connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, STREAMS[Stream.LOGS])
    for chunk in chunks:
        headers, body = encode_log_chunk(chunk)
        await js.publish(
            subjects.logs(chunk.run_id, chunk.step_key, chunk.stream), body, headers=headers
        )
    await nc.close()


async def _until(predicate: Any, what: str, timeout: float = 60) -> None:
    """Poll ``predicate`` (a blocking callable) until true; the timeout only guards a hang."""
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(predicate):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _sizes(cp: ControlPlane, run_id: str) -> dict[tuple[str, str], tuple[str, int]]:
    return {
        (s["stepKey"], s["stream"]): (s["storage"], s["size"])
        for s in cp.gql(STREAMS_QUERY, id=run_id)["computeLogStreams"]
    }


def _joined(objects: dict[str, bytes], prefix: str) -> bytes:
    """The stream from its objects (keys sort by offset; overlaps dropped)."""
    out = b""
    for key in sorted(k for k in objects if k.startswith(prefix)):
        offset = int(key.rsplit("/", 1)[1].split("-")[0])
        out += objects[key][len(out) - offset :] if offset <= len(out) else b"?GAP?"
    return out


# --- pure parts ------------------------------------------------------------------------


def test_batches_merge_into_contiguous_objects_with_deterministic_keys() -> None:
    chunks = _step_output("r1", "a", LogStream.STDOUT, b"0123456789", 3)
    chunks += _step_output("r1", "a", LogStream.STDERR, b"err", 2)
    gap = LogChunk(run_id="r1", step_key="a", stream=LogStream.STDOUT, offset=20, data=b"late")
    # Shuffled, with a redelivered copy and an overlapping chunk in the same batch.
    batch = [chunks[2], chunks[0], gap, chunks[4], chunks[1], chunks[0], chunks[3], chunks[5]]
    batch.append(
        LogChunk(run_id="r1", step_key="a", stream=LogStream.STDOUT, offset=8, data=b"89AB")
    )
    objects = {(o.stream, o.offset): o for o in contiguous_objects(batch)}
    assert {k: (o.data, o.end) for k, o in objects.items()} == {
        ("stdout", 0): (b"0123456789AB", 12),
        ("stdout", 20): (b"late", 24),
        ("stderr", 0): (b"err", 3),
    }
    key = object_key("p/", "r1", "a", "stdout", 0, 12)
    assert key == "p/r1/a/stdout/0000000000000000-0000000000000012"
    # Keys of one stream sort by offset.
    later = object_key("p/", "r1", "a", "stdout", 100, 200)
    assert sorted([later, key]) == [key, later]


def test_agent_wide_work_is_outside_every_launchers_filter() -> None:
    # Logship's presigner is what serves the agent scope: every kind the specs give it.
    assert kinds_served_by(ServedBy.AGENT) == {WorkKind.PRESIGN_COMPUTE_LOGS}
    subject = subjects.route_work("process", WorkKind.PRESIGN_COMPUTE_LOGS)
    assert subject == subjects.agent_work(WorkKind.PRESIGN_COMPUTE_LOGS)
    for substrate in ("process", "docker", "kubernetes", "ecs"):
        prefix = subjects.work_filter(substrate).removesuffix(">")
        assert not subject.startswith(prefix)
        assert subjects.route_work(substrate, WorkKind.LAUNCH_RUN).startswith(prefix)


async def test_only_this_agents_objects_are_presigned() -> None:
    store = S3LogStore(LogShipSettings(sink="s3", s3_bucket="mine", s3_prefix="logs/"))
    verifier = WorkVerifier([WorkSigner.generate().public_key], "default")
    presigner = Presigner(None, store, 60, verifier)  # type: ignore[arg-type]  # answer() publishes nothing
    location = LocationConfig(name="loc", module="jobs")

    def pointer(bucket: str, key: str, run_id: str = "r") -> dict[str, object]:
        where = {"run_id": run_id, "step_key": "a", "stream": "stdout", "offset": 0}
        return where | {"length": 1, "bucket": bucket, "key": key}

    def item(*pointers: dict[str, object]) -> WorkItem:
        return WorkItem(
            id=uuid.uuid4().hex,
            kind=WorkKind.PRESIGN_COMPUTE_LOGS,
            location=location,
            payload={"pointers": list(pointers)},
        )

    own = store.key("r", "a", "stdout", 0, 1)
    for bucket, key in (
        ("other", own),
        ("mine", "secrets/x"),
        ("mine", "logs/../x"),
        ("mine", "logs/r/a"),  # a prefix of the run's objects, not one of them
        ("mine", store.key("r", "a", "stdout", 0, 2)),  # another byte range
        ("mine", store.key("other-run", "a", "stdout", 0, 1)),  # another run's object
    ):
        result = await presigner.answer(item(pointer(bucket, key)))
        assert not result.ok and result.error is not None
        assert "is not the compute-log object of run 'r'" in result.error.message
    # One request, one run's stream: mixing in another run's (real) object is refused.
    mixed = item(pointer("mine", own), pointer("mine", store.key("s", "a", "stdout", 0, 1), "s"))
    result = await presigner.answer(mixed)
    assert not result.ok and "one run's step and stream" in result.error.message  # type: ignore[union-attr]
    # An empty prefix (the whole bucket, for a prefix match) still presigns only exact keys.
    bare = Presigner(None, S3LogStore(LogShipSettings(sink="s3", s3_bucket="mine")), 60, verifier)  # type: ignore[arg-type]
    result = await bare.answer(item(pointer("mine", "anything/in/the/bucket")))
    assert not result.ok and "is not the compute-log object" in result.error.message  # type: ignore[union-attr]
    malformed = item(pointer("mine", own)).model_copy(update={"payload": {"pointers": "no"}})
    result = await presigner.answer(malformed)
    assert not result.ok and "malformed" in result.error.message  # type: ignore[union-attr]
    unconfigured = await Presigner(None, None, 60, verifier).answer(item(pointer("mine", own)))  # type: ignore[arg-type]
    assert not unconfigured.ok and "no S3 bucket" in unconfigured.error.message  # type: ignore[union-attr]


@pytest.mark.integration
async def test_presign_items_that_do_not_verify_are_dead_lettered(
    nats_server, dlq, running
) -> None:
    """Forged, expired, other-deployment and replayed presign items get no answer."""
    signer = WorkSigner.generate()
    settings = LogShipSettings(
        nats_url=nats_server.url,
        nats_credentials=nats_server.credentials_for(Role.LOGSHIP),
        control_plane_url="http://127.0.0.1:9",  # never called: no log chunks here
        work_public_keys=[signer.public_key],
    )

    def presign(**fields: Any) -> WorkItem:
        values: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "kind": WorkKind.PRESIGN_COMPUTE_LOGS,
            "location": LocationConfig(name="loc", module="jobs"),
            "payload": {"pointers": []},
            "deployment": "default",
            "expires_at": time.time() + 600,
        }
        return WorkItem(**(values | fields))

    genuine = signer.sign(presign())
    bad = {
        "expired": signer.sign(presign(expires_at=time.time() - 1)),
        "bad signature": WorkSigner.generate().sign(presign()),
        "another-tenant": signer.sign(presign(deployment="another-tenant")),
    }
    refused = {item.id: reason for reason, item in bad.items()}
    nc = await nats_server.connect()
    try:
        js = nc.jetstream()
        for stream in (Stream.WORK, Stream.RESULTS):
            await ensure_stream(js, STREAMS[stream])
        _start(running, LogShip(settings))
        subject = subjects.agent_work(WorkKind.PRESIGN_COMPUTE_LOGS)
        for item in (genuine, *bad.values()):
            await js.publish(subject, encode(item), headers={"Nats-Msg-Id": item.id})
        # The genuine item once more as a new message: a replay.
        await js.publish(subject, encode(genuine), headers={"Nats-Msg-Id": "replay"})
        dead = await js.pull_subscribe(subjects.dead_letter_all(), stream=str(Stream.DEAD_LETTER))
        letters: list[Any] = []
        async with asyncio.timeout(30):
            while len(letters) < len(refused) + 1:
                with contextlib.suppress(TimeoutError):
                    letters += await dead.fetch(10, timeout=1)
        answers = await js.pull_subscribe(subjects.results_all(), stream=str(Stream.RESULTS))
        (answer,) = await answers.fetch(1, timeout=10)
        # The relay acks each item after its answer or dead letter is published: wait for
        # the last ack rather than read one snapshot of the consumer.
        async with asyncio.timeout(10):
            while True:
                info = await js.consumer_info(str(Stream.WORK), "logship-presign")
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.05)
        assert (await js.stream_info(str(Stream.RESULTS))).state.messages == 1
    finally:
        await nc.close()
    # The genuine item was answered (no bucket here: a clear error), once.
    result = decode(answer.data, WorkResult)
    assert result.id == genuine.id and "no S3 bucket" in result.error.message  # type: ignore[union-attr]
    reasons = {
        (decode(m.data, WorkItem).id, m.headers.get("Nats-Msg-Id")): m.headers["Tether-Reason"]
        for m in letters
    }
    assert reasons.pop((genuine.id, "replay")).startswith(
        f"refused work item: work item {genuine.id} (attempt 1) replayed"
    )
    assert {item_id for item_id, _ in reasons} == set(refused)
    for (item_id, _), reason in reasons.items():
        assert reason.startswith("refused work item: ") and refused[item_id] in reason


def test_the_logship_refuses_to_start_without_a_pinned_key() -> None:
    with pytest.raises(WorkKeyError, match="no work public key pinned"):
        LogShip(LogShipSettings())


def test_s3_mode_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="S3_BUCKET is required"):
        LogShipSettings(sink="s3")


# --- with real parts -------------------------------------------------------------------


@pytest.mark.integration
async def test_logs_land_in_the_bucket_and_the_control_plane_holds_only_pointers(
    nats_server, dlq, moto: MotoServer, control_plane: ControlPlane, running
) -> None:
    bucket = _bucket(moto)
    run_id = _new_run(control_plane)
    # Every byte value, NUL and invalid UTF-8 included, and a multi-chunk stream.
    out = bytes(range(256)) * 40 + "é ✓\n".encode()
    err = b"\xff\xfe not utf-8\n"
    chunks = _step_output(run_id, "a", LogStream.STDOUT, out, 1000)
    chunks += _step_output(run_id, "a", LogStream.STDERR, err, 5)
    settings = _settings(
        nats_server.url,
        control_plane,
        sink="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto.url,
        s3_prefix="tether/",
        batch_max_count=4,
    )
    _start(running, LogShip(settings))
    await _publish(nats_server.url, chunks)

    expected = {("a", "stdout"): ("s3", len(out)), ("a", "stderr"): ("s3", len(err))}
    await _until(lambda: _sizes(control_plane, run_id) == expected, "pointers of both streams")
    objects = _objects(moto, bucket)
    assert _joined(objects, f"tether/{run_id}/a/stdout/") == out
    assert _joined(objects, f"tether/{run_id}/a/stderr/") == err
    # Pointers only: no byte of these logs is in the control plane.
    assert control_plane.gql(CHUNKS_QUERY, id=run_id)["run"]["computeLogs"] == []

    # A redelivery after a crash before the ack: the same batch written again overwrites
    # the same objects with the same bytes, and its pointers are duplicates.
    first_batch = chunks[:4]
    store = S3LogStore(settings)
    async with AgentClient(control_plane.url, control_plane.token) as client:
        sink = S3Sink(store, client)
        await sink.write(first_batch)
        after_one = _objects(moto, bucket)
        await sink.write(first_batch)
    assert _objects(moto, bucket) == after_one
    # Every chunk delivered again through NATS, batched differently: still each byte once.
    await _publish(nats_server.url, chunks)
    await _until(lambda: _consumed(nats_server.url), "the redelivered chunks to be acked")
    again = _objects(moto, bucket)
    assert _joined(again, f"tether/{run_id}/a/stdout/") == out
    assert _joined(again, f"tether/{run_id}/a/stderr/") == err
    assert _sizes(control_plane, run_id) == expected


def _consumed(nats_url: str) -> bool:
    """Whether the logship's consumer has acked everything on the LOGS stream."""

    async def check() -> bool:
        nc = await nats_connect(nats_url)
        try:
            info = await nc.jetstream().consumer_info(str(Stream.LOGS), "logship-logs")
            return info.num_pending == 0 and info.num_ack_pending == 0
        finally:
            await nc.close()

    return asyncio.run(check())


class LogSeen(logging.Handler):
    """Sets ``seen`` once a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def _consumer(nats_url: str) -> tuple[int, int]:
    """(not yet delivered, delivered but unacked) of the logship's LOGS consumer."""

    async def check() -> tuple[int, int]:
        nc = await nats_connect(nats_url)
        try:
            info = await nc.jetstream().consumer_info(str(Stream.LOGS), "logship-logs")
            return info.num_pending, info.num_ack_pending
        finally:
            await nc.close()

    return asyncio.run(check())


@pytest.mark.integration
async def test_a_dead_s3_endpoint_loses_nothing(
    nats_server, dlq, control_plane: ControlPlane, running, tmp_path: Path
) -> None:
    run_id = _new_run(control_plane)
    out = b"".join(b"line %d\n" % i for i in range(500))
    chunks = _step_output(run_id, "a", LogStream.STDOUT, out, 700)
    late = MotoServer(free_port(), tmp_path / "moto.log")
    settings = _settings(
        nats_server.url,
        control_plane,
        sink="s3",
        s3_bucket="late-bucket",
        s3_endpoint_url=late.url,
        s3_connect_timeout_s=0.5,
        s3_max_attempts=1,
    )
    failed = LogSeen("upload failed")
    relay_log = logging.getLogger("tether.shared.nats.relay")
    relay_log.addHandler(failed)
    try:
        _start(running, LogShip(settings))
        await _publish(nats_server.url, chunks)
        assert await asyncio.to_thread(failed.seen.wait, 60), "the upload never failed"
    finally:
        relay_log.removeHandler(failed)
    # Nothing acked (every chunk delivered and held in progress), nothing pointed to.
    assert sum(await asyncio.to_thread(_consumer, nats_server.url)) == len(chunks)
    assert _sizes(control_plane, run_id) == {}

    # S3 comes up (with the bucket) on the same endpoint: the retries store everything.
    late.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=late.url, region_name="us-east-1").create_bucket(
            Bucket="late-bucket"
        )
        await _until(
            lambda: _sizes(control_plane, run_id) == {("a", "stdout"): ("s3", len(out))},
            "the pointers after S3 came back",
        )
        assert _joined(_objects(late, "late-bucket"), "tether/compute-logs/") == out
        await _until(lambda: _consumer(nats_server.url) == (0, 0), "every chunk acked")
    finally:
        late.stop()


@pytest.mark.integration
async def test_presigned_urls_round_trip_through_the_agent(
    nats_server, moto: MotoServer, control_plane: ControlPlane, running
) -> None:
    """UI/API -> control plane -> work item -> poller -> logship presigns -> eventrelay ->
    control plane -> URLs; the bytes then come from the bucket, not the control plane."""
    bucket = _bucket(moto)
    run_id = _new_run(control_plane)
    out = "".join(f"row {i}: ✓ done\n" for i in range(3000)).encode()
    await _agent_with_logs(running, nats_server.url, control_plane, moto, bucket, run_id, out)

    asked = time.time()
    answer = (
        await asyncio.to_thread(control_plane.gql, URLS_QUERY, id=run_id, step="a", stream="stdout")
    )["computeLogUrls"]
    assert asked < answer["expiresAt"] <= time.time() + 120
    assert not answer["hasMore"] and len(answer["urls"]) > 1
    text = b""
    async with httpx.AsyncClient() as http:
        for piece in answer["urls"]:
            assert piece["url"].startswith(f"{moto.url}/{bucket}/")
            assert "X-Amz-Expires=120" in piece["url"]
            got = await http.get(piece["url"])
            assert got.status_code == 200, got.text
            assert len(got.content) == piece["length"]
            text += got.content[piece["skip"] :]
    assert text == out

    # `tether run logs` reads the same stream from the bucket through the agent's URLs.
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tether.shared.runtime.cli", "run", "logs", run_id,
        "--step", "a", "--stream", "stdout", "--url", control_plane.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    printed, errors = await asyncio.wait_for(cli.communicate(), 120)
    assert cli.returncode == 0, errors.decode()
    assert printed == out


async def _agent_with_logs(
    running: list[tuple[Any, asyncio.Task[None]]],
    nats_url: str,
    cp: ControlPlane,
    moto: MotoServer,
    bucket: str,
    run_id: str,
    out: bytes,
) -> None:
    """A whole agent (eventrelay, poller, logship in S3 mode) with ``out`` shipped as step
    ``a``'s stdout of ``run_id``."""
    if importlib.util.find_spec("tether.poller") is None or (
        importlib.util.find_spec("tether.eventrelay") is None
    ):
        pytest.skip("the poller and eventrelay are not installed in this environment")
    from tether.eventrelay.service import EventRelay
    from tether.eventrelay.settings import EventRelaySettings
    from tether.poller import PollerService, PollerSettings

    agent = {
        "nats_url": nats_url,
        "control_plane_url": cp.url,
        "agent_token": cp.token,
        "work_public_keys": [cp.work_key],
    }
    server = server_at(nats_url)
    relay = EventRelaySettings(**agent, nats_credentials=server.credentials_for(Role.EVENTRELAY))
    _start(running, EventRelay(relay))
    poller = PollerSettings(
        **agent,
        nats_credentials=server.credentials_for(Role.POLLER),
        agent_id="it",
        claim_wait_s=1.0,
    )
    _start(running, PollerService(poller))
    settings = _settings(
        nats_url,
        cp,
        sink="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto.url,
        batch_max_count=5,
        presign_expiry_s=120,
    )
    _start(running, LogShip(settings))
    await _publish(nats_url, _step_output(run_id, "a", LogStream.STDOUT, out, 4096))
    await _until(lambda: _sizes(cp, run_id) == {("a", "stdout"): ("s3", len(out))}, "pointers")


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.integration
async def test_the_run_page_reads_the_logs_from_the_bucket(
    nats_server, moto: MotoServer, control_plane: ControlPlane, running
) -> None:
    """Chromium on the run page: the text comes from the bucket via the agent's URLs."""
    executable = _chromium()
    if executable is None:
        skip_or_fail("Chromium is not installed (apt-get install chromium; .ci/run does)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (it is in the dev dependency group)")
    bucket = _bucket(moto)
    run_id = _new_run(control_plane)
    # Multi-byte characters cut between objects must survive the join.
    out = "".join(f"ligne {i} — façade ✓\n" for i in range(2000)).encode()
    await _agent_with_logs(running, nats_server.url, control_plane, moto, bucket, run_id, out)

    async with async_playwright() as p:
        # --no-sandbox: CI and this machine run as root, where Chromium's sandbox refuses.
        browser = await p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page()
            bucket_reads: list[str] = []
            page.on(
                "request",
                lambda r: bucket_reads.append(r.url) if r.url.startswith(moto.url) else None,
            )
            await page.goto(f"{control_plane.url}/runs/{run_id}")
            text = page.locator("#log-links pre.log")
            await text.wait_for(timeout=60_000)
            # Polled from here, not wait_for_function: the page's CSP forbids its eval.
            deadline = time.monotonic() + 60
            while len(await text.text_content() or "") < len(out.decode()):
                assert time.monotonic() < deadline, "the page never read the whole log"
                await asyncio.sleep(0.2)
            assert await text.text_content() == out.decode()
            assert "Stored in your bucket" in await page.locator("#log-storage").inner_text()
            assert bucket_reads and all(f"/{bucket}/" in url for url in bucket_reads)
        finally:
            await browser.close()

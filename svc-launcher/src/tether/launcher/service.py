"""The launcher's lifecycle: consume work items, run code servers and run workers."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from tether.launcher.codeservers import CodeServerRegistry
from tether.launcher.consumer import WorkConsumer, consumer_name
from tether.launcher.errors import LauncherError
from tether.launcher.handlers import WorkHandlers
from tether.launcher.heartbeats import Heartbeat, Heartbeats
from tether.launcher.policy import PolicyContext
from tether.launcher.process import NatsRunStarts, ProcessSubstrate
from tether.launcher.publishing import Publisher
from tether.launcher.registry import CodeServerRecords, default_scope
from tether.launcher.runs import RunClaims
from tether.launcher.settings import LauncherSettings
from tether.launcher.substrate import BoundedStarts, Substrate
from tether.launcher.tokens import SECRET_ENV, tokens_from_settings
from tether.launcher.userenv import UserCode
from tether.shared.nats import subjects
from tether.shared.nats.broker import connect_broker, make_broker
from tether.shared.nats.connection import NatsLogin
from tether.shared.nats.status import StatusReporter
from tether.shared.nats.streams import jetstream_call, wait_for_stream
from tether.shared.nats.subjects import Stream
from tether.shared.nats.workgate import WorkGate

log = logging.getLogger(__name__)


def make_user_code(settings: LauncherSettings) -> UserCode:
    """The policy and environment builder of user code for this launcher's settings."""
    default_image = {
        "docker": settings.docker.image,
        "k8s": settings.k8s.image,
        "ecs": settings.ecs.image,
    }.get(settings.substrate)
    context = PolicyContext(
        substrate=settings.substrate,
        default_image=default_image,
        ecs_task_role=settings.ecs.task_role_arn,
        ecs_execution_role=settings.ecs.execution_role_arn,
        cwd=os.getcwd(),
    )
    return UserCode(
        settings.location_policy,
        context,
        passthrough=settings.user_code_env_passthrough,
        env_files=settings.user_code_env_files,
        # Read once, here: the launcher's environment at startup is what user code may
        # be given parts of (the allowlist), never the whole.
        source_env=os.environ,
    )


def make_substrate(settings: LauncherSettings) -> Substrate[Any, Any]:
    """Build the substrate named by ``settings.substrate``.

    Raises:
        LauncherError: the substrate is unknown.
    """
    user_code = make_user_code(settings)
    if settings.substrate == ProcessSubstrate.name:
        process = settings.process
        return ProcessSubstrate(
            process.python_executable,
            user_code=user_code,
            start_timeout_s=settings.code_server_start_timeout_s,
            stop_grace_s=settings.terminate_grace_s,
            warm_start=process.warm_start,
            fork_request_timeout_s=process.fork_request_timeout_s,
            orphan_grace_s=process.orphan_grace_s,
            max_concurrent_cold_starts=process.max_concurrent_cold_starts,
        )
    if settings.substrate == "docker":
        # Imported here: only a docker launcher needs the SDK and an engine.
        try:
            from tether.launcher.docker import DockerSubstrate
        except ImportError as err:
            raise LauncherError(
                f"the docker substrate needs tether-launcher[docker] (the docker SDK): {err}"
            ) from err

        return DockerSubstrate(
            agent_id=settings.agent_id,
            default_image=settings.docker.image,
            python=settings.container_python,
            user_code=user_code,
            base_url=settings.docker.url,
            start_timeout_s=settings.code_server_start_timeout_s,
            stop_grace_s=settings.terminate_grace_s,
        )
    if settings.substrate == "k8s":
        try:
            from tether.launcher.k8s import KubernetesSubstrate
        except ImportError as err:
            raise LauncherError(
                f"the k8s substrate needs tether-launcher[k8s] (the kubernetes client): {err}"
            ) from err
        from tether.launcher.k8s._manifests import PodDefaults

        return KubernetesSubstrate(
            agent_id=settings.agent_id,
            namespace=settings.k8s.namespace,
            default_image=settings.k8s.image,
            kubeconfig=settings.k8s.kubeconfig,
            pod_defaults=PodDefaults(
                run_as_user=settings.k8s.run_as_user,
                resources=settings.k8s.resources,
                deadline_slack_s=settings.k8s.deadline_slack_s,
            ),
            poll_interval_s=settings.k8s.poll_interval_s,
            failed_create_grace_s=settings.k8s.failed_create_grace_s,
            python=settings.container_python,
            user_code=user_code,
            start_timeout_s=settings.code_server_start_timeout_s,
            stop_grace_s=settings.terminate_grace_s,
        )
    if settings.substrate == "ecs":
        try:
            from tether.launcher.ecs import EcsSubstrate
        except ImportError as err:
            raise LauncherError(
                f"the ecs substrate needs tether-launcher[ecs] (boto3): {err}"
            ) from err
        return EcsSubstrate(
            agent_id=settings.agent_id,
            settings=settings.ecs,
            python=settings.container_python,
            user_code=user_code,
            start_timeout_s=settings.code_server_start_timeout_s,
            stop_grace_s=settings.terminate_grace_s,
        )
    raise LauncherError(
        f"unknown substrate {settings.substrate!r}; available: process, docker, k8s, ecs"
    )


class LauncherService:
    """Consumes ``tether.work.<substrate>.>`` and acts on each work item.

    On shutdown it stops fetching, finishes in-flight handlers, leaves run workers
    running (they are independent processes), stops the code servers it started and
    closes NATS.

    Args:
        settings: launcher settings.

    Raises:
        WorkKeyError: no work public key is pinned (the launcher would act on forged work).
    """

    def __init__(self, settings: LauncherSettings) -> None:
        self._settings = settings
        # First: without a pinned key the launcher must not start at all.
        self._verifier = settings.work_verifier()
        secret = settings.codeserver_secret
        self._tokens = tokens_from_settings(
            secret.get_secret_value() if secret else None, settings.codeserver_secret_file
        )
        # Read once, then gone from the environment, which the processes this launcher
        # starts (user code, on the process substrate) would otherwise inherit.
        os.environ.pop(SECRET_ENV, None)
        self._substrate = make_substrate(settings)
        self._stopping = asyncio.Event()
        self._ready = False

    async def __aenter__(self) -> LauncherService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.shutdown()

    def ready(self) -> bool:
        """Consuming work, and not stopping."""
        return self._ready and not self._stopping.is_set()

    def shutdown(self) -> None:
        """Stop fetching work; idempotent."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve until :meth:`shutdown`, then stop gracefully."""
        s = self._settings
        login = await NatsLogin.read(s.nats_user)
        # FastStream's broker is the one connection: the work subscriber and the result
        # publishers run on it, and the KV buckets and core subscriptions use its client.
        broker = make_broker(
            s.nats_url,
            f"tether-launcher-{s.substrate}",
            login,
            graceful_timeout=s.graceful_shutdown_timeout,
        )
        nc = await connect_broker(broker, s.nats_url)
        registry = CodeServerRegistry(
            self._substrate,
            tokens=self._tokens,
            # Code servers in containers are called across a network: TLS, pinned.
            tls=s.substrate != ProcessSubstrate.name,
            scope=s.registry_scope or default_scope(s.agent_id, s.substrate),
            # Well within the orphan grace, so one lost renewal costs nothing.
            adopt_interval_s=max(min(s.process.orphan_grace_s / 4, 15.0), 0.5),
        )
        handlers: WorkHandlers | None = None
        beating: asyncio.Task[None] | None = None
        try:
            js = nc.jetstream()
            await wait_for_stream(js, Stream.WORK, timeout=s.stream_wait_timeout_s)
            # Before consuming: adopt what a previous launcher left running.
            records = await jetstream_call(
                lambda: CodeServerRecords.open(js, replicas=s.nats_replicas),
                "binding the code-server registry",
            )
            await registry.restore(records)
            if isinstance(self._substrate, BoundedStarts):
                # The first event of a run tells that its worker has started.
                self._substrate.use_start_signal(NatsRunStarts(nc))
            claims = await jetstream_call(
                lambda: RunClaims.open(js, ttl_s=s.run_claim_ttl_s, replicas=s.nats_replicas),
                "binding run claims",
            )
            publisher = Publisher(
                broker, retry_timeout_s=s.result_publish_timeout_s, max_payload=nc.max_payload
            )
            heartbeats = await jetstream_call(
                lambda: Heartbeats.open(js, replicas=s.nats_replicas),
                "binding launcher heartbeats",
            )
            heartbeat = Heartbeat(
                heartbeats,
                launcher=f"{s.agent_id}/{s.substrate}",
                domain=s.domain or self._substrate.run_domain(),
                ttl_s=s.heartbeat_ttl_s,
                refresh_s=s.heartbeat_refresh_s,
            )
            # Fresh before the first claim naming it; kept fresh until the last handler
            # is done (it stops after the consumer, below).
            await jetstream_call(heartbeat.beat, "writing the launcher heartbeat")
            beating = asyncio.create_task(heartbeat.run())
            handlers = WorkHandlers(s, self._substrate, registry, claims, publisher, heartbeat)
            # Only control items of runs launched in this domain are acted on here.
            log.info("launcher domain: %s, heartbeat %s", handlers.domain, heartbeat.key)
            await _share_location_stops(nc, s.substrate, handlers)
            gate = await jetstream_call(
                lambda: WorkGate.open(js, self._verifier, replicas=s.nats_replicas),
                "binding the work deliveries",
            )
            consumer = WorkConsumer(s, handlers, publisher, gate)
            await consumer.declare(js)
            work = consumer.subscribe(broker, inbox_prefix=login.js_inbox_prefix)
            reporter = StatusReporter(
                js,
                f"launcher-{s.substrate}",
                code_servers=registry.statuses,
                replicas=s.nats_replicas,
            )

            async def start() -> None:
                try:
                    await broker.start()  # binds the consumer declared above, starts fetching
                except Exception:
                    # Half started (its consume task runs before the bind): reset it, so a
                    # retry starts one subscription, not a second.
                    await work.stop()
                    raise

            await jetstream_call(start, "binding the work consumer")
            log.info(
                "consuming %s as %s", subjects.work_filter(s.substrate), consumer_name(s.substrate)
            )
            async with asyncio.TaskGroup() as tg:
                reporting = tg.create_task(reporter.run())
                adopting = tg.create_task(registry.keep_adopted())
                self._ready = True
                # A crash of a loop cancels this wait through the TaskGroup.
                await self._stopping.wait()
                log.info("launcher stopping: no more fetches")
                reporting.cancel()
                adopting.cancel()
            # Stops fetching, waits up to graceful_shutdown_timeout for in-flight handlers
            # and cancels the rest (they nak their messages).
            await work.stop()
        finally:
            if beating is not None:
                # After the handlers: a launch still in one keeps its claim. The key is
                # deleted, so what this launcher claimed and left unlaunched (cancelled
                # past the grace) is taken over at once.
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)
            if handlers is not None:
                handlers.detach_runs()
            if (
                self._substrate.code_servers_outlive_launcher
                or s.process.keep_code_servers_on_shutdown
            ):
                # Containers outlive us (the next launcher adopts them by their labels);
                # processes live on for their orphan grace (adopted from the KV registry).
                await registry.detach_all()
            else:
                await registry.stop_all()
            await self._substrate.aclose()
            try:
                await broker.stop()  # drains the connection
            except Exception as err:  # noqa: BLE001 - best effort at shutdown
                log.debug("closing NATS: %r", err)
        log.info("launcher stopped")


async def _share_location_stops(nc: NATS, substrate: str, handlers: WorkHandlers) -> None:
    """Whichever replica serves a ``stop_location`` tells the others over core NATS.

    Work items go to one replica only (work-queue semantics), but every replica may run
    a code server for the location. A replica that is down at that moment misses the
    notice (and, restarted, adopts its server from the registry): the code server of a
    removed location then runs on unused until that launcher stops it.
    """
    subject = subjects.location_stopped(substrate)
    me = uuid.uuid4().hex  # this replica, so it ignores its own notice

    async def notify(location_name: str) -> None:
        await nc.publish(subject, location_name.encode(), headers={"From": me})

    async def on_notice(msg: Msg) -> None:
        if (msg.headers or {}).get("From") == me:
            return
        try:
            await handlers.forget_location(msg.data.decode())
        except Exception:  # one bad notice must not stop the subscription
            log.exception("could not stop the code server of a removed location")

    await nc.subscribe(subject, cb=on_notice)
    handlers.on_location_stopped(notify)

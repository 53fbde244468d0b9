"""The kubernetes substrate: code servers as Deployments + Services, runs as Jobs.

The ``kubernetes`` client is blocking: every API call runs in a thread of our own pool,
and transient failures (connection errors, 429, 5xx) are retried with backoff. The
agent's run Jobs are read by one list per namespace and poll interval (:mod:`._jobs`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import stamina
import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config_loader
from kubernetes.client.exceptions import ApiException
from tether.launcher.errors import CodeServerStartError, LauncherError, RunLaunchError
from tether.launcher.k8s._lists import ListRoundError, ListWatch
from tether.launcher.k8s._manifests import (
    LABEL_CONFIG,
    ROLE_CODE_SERVER,
    ROLE_RUN,
    PodDefaults,
    agent_selector,
    code_server_address,
    code_server_name,
    code_server_objects,
    code_server_selector,
    config_hash,
    k8s_config,
    run_job,
    run_secret,
    selector_string,
)
from tether.launcher.substrate import NO_ENV, CodeServerHandle, RunWorkerHandle, WorkerRecord
from tether.launcher.userenv import UserCode
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Threads (and connections) of the blocking client's calls.
_POOL_THREADS = 16

# Pod states that will not get better by waiting: fail the start at once, with the events.
FATAL_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(kw_only=True)
class KubernetesCodeServer(CodeServerHandle):
    """A code server's Deployment (and Service of the same name).

    Attributes:
        namespace: their namespace.
        name: their name.
    """

    namespace: str
    name: str


@dataclass(kw_only=True)
class KubernetesRunWorker(RunWorkerHandle):
    """A run's Job (``worker_id`` is ``<namespace>/<name>``).

    Attributes:
        namespace: its namespace.
        name: its name.
    """

    namespace: str
    name: str


class _ApiObject(Protocol):
    @property
    def metadata(self) -> k8s.V1ObjectMeta | None: ...


def _meta(obj: _ApiObject) -> k8s.V1ObjectMeta:
    # The API server sends every object with its metadata and name; the models make both
    # optional for request bodies.
    return cast(k8s.V1ObjectMeta, obj.metadata)


def _name(obj: _ApiObject) -> str:
    return cast(str, _meta(obj).name)


def api_message(err: ApiException) -> str:
    """The API server's explanation of a failed call."""
    return f"{err.status} {err.reason}: {err.body or ''}".strip()


#: API answers worth asking again: throttled, timed out, or the server (or a proxy in
#: front of it) failing for a while.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def transient_api_error(exc: Exception) -> bool:
    """Whether an API call that raised ``exc`` may succeed if made again."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES
    # The client's transport: refused or reset connections, timeouts, broken responses.
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


#: What an API call may raise once its retries are spent: the API's answer, or the
#: transport's failure.
_API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


def _error_text(err: BaseException) -> str:
    return api_message(err) if isinstance(err, ApiException) else str(err)


def _labels_match(obj: _ApiObject, labels: Mapping[str, str]) -> bool:
    have = _meta(obj).labels or {}
    return all(have.get(k) == v for k, v in labels.items())


class KubernetesSubstrate:
    """Runs code servers as Deployments + Services and runs as Jobs in a namespace.

    A code server's objects are named and labelled after its location and a hash of its
    config: a restarted launcher adopts the Deployment of the same config; a changed config
    creates the new Deployment and deletes the old objects once it is ready (blue/green).
    Runs are Jobs with ``backoffLimit: 0`` (a run starts once) and a TTL after finishing;
    terminate deletes the Job (its pod gets SIGTERM, SIGKILL after the grace period).

    Args:
        agent_id: this agent's name; only objects labelled with it are touched.
        namespace: default namespace (a location's ``kubernetes.namespace`` overrides it).
        default_image: image of locations that name none.
        python: the interpreter inside images.
        api_client: a configured client; None: from ``kubeconfig``, else the in-cluster
            config, else the kubeconfig of ``$KUBECONFIG`` or ``~/.kube/config``.
        kubeconfig: path of a kubeconfig file (its current context) to use.
        start_timeout_s: seconds a code server has to become ready.
        stop_grace_s: grace period of deleted pods.
        poll_interval_s: seconds between status reads while waiting: one list of the
            agent's run Jobs per namespace per interval, for all runs at once.
        health_interval_s: seconds between readiness reads of a running code server (the
            protocol's synchronous ``code_server_alive`` answers from the last read, so
            the event loop never waits on the API server).
        pod_defaults: what user pods get where their location says nothing (user,
            requests and limits, the slack of a run's deadline).
        failed_create_grace_s: seconds a run Job may keep failing to create its pod
            (FailedCreate events) before the run ends with those events as its error.
        retry_timeout_s: seconds a call failing transiently (connection errors, 429,
            5xx) is retried, with exponential backoff and jitter.
        user_code: the location policy and environment builder (default: the default
            policy); pods get only the location's env and the launcher's extras.
    """

    name = "k8s"
    code_servers_outlive_launcher = True

    def __init__(
        self,
        *,
        agent_id: str,
        namespace: str = "default",
        default_image: str | None = None,
        python: str = "python",
        api_client: k8s.ApiClient | None = None,
        kubeconfig: str | None = None,
        start_timeout_s: float = 120.0,
        stop_grace_s: float = 10.0,
        poll_interval_s: float = 1.0,
        health_interval_s: float = 5.0,
        pod_defaults: PodDefaults = PodDefaults(),
        failed_create_grace_s: float = 60.0,
        retry_timeout_s: float = 30.0,
        user_code: UserCode | None = None,
    ) -> None:
        self._user_code = user_code or UserCode.default(self.name, default_image)
        if api_client is None:
            try:
                if kubeconfig is not None:
                    k8s_config_loader.load_kube_config(config_file=kubeconfig)
                else:
                    try:
                        k8s_config_loader.load_incluster_config()
                    except k8s_config_loader.ConfigException:
                        k8s_config_loader.load_kube_config()
            except (k8s_config_loader.ConfigException, OSError) as err:
                raise LauncherError(f"no Kubernetes configuration: {err}") from err
            config = k8s.Configuration.get_default_copy()
            # One connection per thread of the pool (urllib3 keeps 10 by default).
            config.connection_pool_maxsize = _POOL_THREADS
            api_client = k8s.ApiClient(config)
        self._api = api_client
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._batch = k8s.BatchV1Api(api_client)
        self._agent = agent_id
        self._namespace = namespace
        self._default_image = default_image
        self._python = python
        self._start_timeout = start_timeout_s
        self._stop_grace = stop_grace_s
        self._poll = poll_interval_s
        self._health_interval = health_interval_s
        self._pod_defaults = pod_defaults
        self._failed_create_grace = failed_create_grace_s
        self._retry_timeout = retry_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=_POOL_THREADS, thread_name_prefix="k8s-api")
        self._ready: dict[tuple[str, str], bool] = {}
        self._watchers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._exits: dict[tuple[str, str], int] = {}
        self._jobs = ListWatch(self._list_run_jobs, poll_interval_s, _json_name, what="run Jobs")
        self._code_servers = ListWatch(
            self._list_code_servers, health_interval_s, _json_name, what="code-server Deployments"
        )
        # Reads shared by the runs of a namespace (FailedCreate events, run pods):
        # (kind, namespace) -> (read at, answer).
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._cache_lock = asyncio.Lock()

    @property
    def job_watch(self) -> ListWatch:
        """The shared reads of the agent's run Jobs (its counters show their cost)."""
        return self._jobs

    @property
    def code_server_watch(self) -> ListWatch:
        """The shared reads of the agent's code-server Deployments (their readiness)."""
        return self._code_servers

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the pool, retried while it fails transiently.

        A create retried after a lost answer may meet its own object (409): callers
        treat that as adoption. Other API errors raise at once.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        async for attempt in stamina.retry_context(
            on=transient_api_error,
            attempts=None,
            timeout=self._retry_timeout,
            wait_initial=0.1,
            wait_max=5.0,
            wait_jitter=0.5,
        ):
            with attempt:
                if attempt.num > 1:
                    log.info("calling %s again (attempt %d)", fn.__name__, attempt.num)
                return await loop.run_in_executor(self._pool, call)
        raise AssertionError("unreachable")  # stamina retries until success or a raise

    def _ns(self, location: LocationConfig) -> str:
        return k8s_config(location).namespace or self._namespace

    # --- code servers -------------------------------------------------------------------

    async def start_code_server(
        self, location: LocationConfig, env: Mapping[str, str] = NO_ENV
    ) -> KubernetesCodeServer:
        """Adopt the Deployment of this config or create it (``env``, the caller token and
        TLS pair among others, added to its pod's environment); wait until it is ready.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing created).
            CodeServerStartError: no image, the API refused the objects, a pod cannot start
                (image pull, config error, crash loop; with the pod's events), or timeout.
        """
        user_env = self._user_code.container_env(location, env)
        image = location.image or self._default_image
        if image is None:
            raise CodeServerStartError(
                location.name, "no image: set the location's image or TETHER_LAUNCHER_K8S_IMAGE"
            )
        ns = self._ns(location)
        name = code_server_name(location, self._agent)
        selector = code_server_selector(self._agent, location)
        found = await self._call(
            self._apps.list_namespaced_deployment, ns, label_selector=selector_string(selector)
        )
        # Also filter here: label selectors are the server's job, but be strict about ours.
        existing = [d for d in found.items if _labels_match(d, selector)]
        if any(_meta(d).name == name for d in existing):
            log.info("adopting code server deployment %s/%s", ns, name)
        else:
            deployment, service = code_server_objects(
                location,
                user_env,
                image=image,
                python=self._python,
                agent_id=self._agent,
                namespace=ns,
                defaults=self._pod_defaults,
            )
            own = deployment["metadata"]["labels"]
            try:
                await self._create_or_adopt(
                    self._apps.create_namespaced_deployment,
                    self._apps.read_namespaced_deployment,
                    ns,
                    deployment,
                    own,
                )
                await self._create_or_adopt(
                    self._core.create_namespaced_service,
                    self._core.read_namespaced_service,
                    ns,
                    service,
                    own,
                )
            except _API_ERRORS as err:
                raise CodeServerStartError(
                    location.name, f"the API refused the code server: {_error_text(err)}"
                ) from err
            except _NotOursError as err:
                raise CodeServerStartError(location.name, str(err)) from err
        await self._await_ready(location, ns, name)
        for d in existing:  # blue/green: the old ones go once the new one is ready
            # (their labels are there: they matched the selector)
            if cast(dict[str, str], _meta(d).labels).get(LABEL_CONFIG) != config_hash(location):
                await self._delete_code_server(ns, _name(d))
        self._watch((ns, name))
        return KubernetesCodeServer(
            location, code_server_address(location, self._agent, ns), namespace=ns, name=name
        )

    def _watch(self, key: tuple[str, str]) -> None:
        self._ready[key] = True
        old = self._watchers.pop(key, None)
        if old is not None:
            old.cancel()
        self._watchers[key] = asyncio.create_task(self._watch_readiness(key))

    async def _watch_readiness(self, key: tuple[str, str]) -> None:
        # Read from the namespace's shared list of code servers, once per health interval.
        ns, name = key
        while True:
            try:
                d = await self._code_servers.next_state(ns, name)
            except ListRoundError:
                # Logged by the round; the last answer stands until a list succeeds.
                continue
            if d is None:
                self._ready[key] = False
                return
            self._ready[key] = int((d.get("status") or {}).get("readyReplicas") or 0) >= 1

    async def _create_or_adopt(
        self,
        create: Callable[..., Any],
        read: Callable[..., Any],
        ns: str,
        body: dict[str, Any],
        labels: Mapping[str, str],
    ) -> Any:
        """Create ``body``; if it exists already (409: another replica, an earlier start
        interrupted, or a retried create whose first answer was lost), adopt it when it
        carries ``labels``. Return the object (the API's model of it).

        Raises:
            ApiException: the API refused it (or reading it back failed).
            _NotOursError: an object of that name exists without our labels.
        """
        name = body["metadata"]["name"]
        try:
            return await self._call(create, ns, body)
        except ApiException as err:
            if err.status != 409:
                raise
        there = await self._call(read, name, ns)
        if not _labels_match(there, labels):
            raise _NotOursError(
                f"{body['kind']} {ns}/{name} exists and is not this agent's "
                f"(its labels: {_meta(there).labels or {}})"
            )
        log.info("adopting %s %s/%s (it already existed)", body["kind"], ns, name)
        return there

    async def _await_ready(self, location: LocationConfig, ns: str, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            try:
                d = await self._call(self._apps.read_namespaced_deployment, name, ns)
            except _API_ERRORS as err:
                raise CodeServerStartError(
                    location.name, f"cannot read deployment {ns}/{name}: {_error_text(err)}"
                ) from err
            if d.status is not None and (d.status.ready_replicas or 0) >= 1:
                log.info("code server %s/%s ready", ns, name)
                return
            # Our Deployments (created or adopted) always select by matchLabels.
            labels = cast(dict[str, str], d.spec.selector.match_labels)
            problem = await self._pod_problem(ns, labels)
            if problem is not None:
                await self._delete_code_server(ns, name)
                raise CodeServerStartError(location.name, problem)
            if loop.time() > deadline:
                await self._delete_code_server(ns, name)
                raise CodeServerStartError(
                    location.name,
                    f"deployment {ns}/{name} not ready within {self._start_timeout:.0f}s",
                )
            await asyncio.sleep(self._poll)

    async def _pod_problem(self, ns: str, labels: Mapping[str, str]) -> str | None:
        """Why a pod of ``labels`` cannot start, with its events; None while all is well."""
        pods = await self._call(
            self._core.list_namespaced_pod, ns, label_selector=selector_string(labels)
        )
        for pod in pods.items:
            if not all((_meta(pod).labels or {}).get(k) == v for k, v in labels.items()):
                continue
            for status in (pod.status.container_statuses or []) if pod.status else []:
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason in FATAL_WAITING_REASONS:
                    events = await self._events(ns, _name(pod))
                    text = f"pod {_name(pod)}: {waiting.reason}: {waiting.message or ''}"
                    return text + (f"\n--- events ---\n{events}" if events else "")
        return None

    async def _events(self, ns: str, pod_name: str) -> str:
        try:
            events = await self._call(
                self._core.list_namespaced_event,
                ns,
                field_selector=f"involvedObject.name={pod_name}",
            )
        except _API_ERRORS:
            return ""
        return "\n".join(
            f"{e.type} {e.reason}: {e.message}"
            for e in events.items
            if e.involved_object is None or e.involved_object.name == pod_name
        )

    async def _delete_code_server(self, ns: str, name: str) -> None:
        for fn in (self._apps.delete_namespaced_deployment, self._core.delete_namespaced_service):
            try:
                await self._call(fn, name, ns, grace_period_seconds=math.ceil(self._stop_grace))
            except _API_ERRORS as err:
                if not (isinstance(err, ApiException) and err.status == 404):
                    log.warning("deleting %s/%s: %s", ns, name, _error_text(err))

    async def stop_code_server(self, handle: KubernetesCodeServer) -> None:
        """Delete the code server's Deployment and Service."""
        key = (handle.namespace, handle.name)
        watcher = self._watchers.pop(key, None)
        if watcher is not None:
            watcher.cancel()
        self._ready[key] = False
        await self._delete_code_server(*key)

    async def remove_location(self, location_name: str) -> None:
        """Nothing to do: a location keeps nothing here besides its code server."""

    def code_server_alive(self, handle: KubernetesCodeServer) -> bool:
        """Whether the Deployment had a ready replica at the last read (no API call)."""
        return self._ready.get((handle.namespace, handle.name), False)

    # --- run workers --------------------------------------------------------------------

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> KubernetesRunWorker:
        """Create the run's Job, then its Secret (the worker's arguments and ``env``,
        owned by the Job); a Job of this run already there (409) is adopted.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing created).
            RunLaunchError: no image, the API refused the Job or its Secret (then no Job
                is left), or kept failing past the retries.
        """
        user_env = self._user_code.container_env(args.location, env)
        image = args.location.image or self._default_image
        if image is None:
            raise RunLaunchError(f"location {args.location.name!r} has no image")
        ns = self._ns(args.location)
        # The launcher's extras (the run's NATS credentials, its traceparent) and the
        # worker's arguments go to the run's Secret, not into the Job.
        extras = {k: v for k, v in env.items() if user_env.values.get(k) == v}
        body = run_job(
            args,
            user_env,
            image=image,
            python=self._python,
            agent_id=self._agent,
            namespace=ns,
            defaults=self._pod_defaults,
            secret_env=frozenset(extras),
        )
        name = body["metadata"]["name"]
        labels = body["metadata"]["labels"]
        try:
            job = await self._create_or_adopt(
                self._batch.create_namespaced_job, self._batch.read_namespaced_job, ns, body, labels
            )
        except _API_ERRORS as err:
            raise RunLaunchError(
                f"the API refused the Job of run {args.run.run_id}: {_error_text(err)}"
            ) from err
        except _NotOursError as err:
            raise RunLaunchError(f"run {args.run.run_id}: {err}") from err
        try:
            uid = _meta(job).uid
            if not uid:
                raise RunLaunchError(f"the API answered Job {ns}/{name} without its uid")
            # Created after its Job, owned by it: deleted with it, never left behind. The
            # kubelet retries a pod whose Secret is not there yet.
            secret = run_secret(args, extras, agent_id=self._agent, namespace=ns, owner_uid=uid)
            await self._create_or_adopt(
                self._core.create_namespaced_secret,
                self._core.read_namespaced_secret,
                ns,
                secret,
                labels,
            )
        except (*_API_ERRORS, _NotOursError, RunLaunchError) as err:
            # Without its Secret the pod can never start: the launch failed, nothing stays.
            await self._discard_job(ns, name)
            raise RunLaunchError(
                f"the Secret of run {args.run.run_id} could not be made: {_error_text(err)}"
            ) from err
        return KubernetesRunWorker(
            args.run.run_id, worker_id=f"{ns}/{name}", namespace=ns, name=name
        )

    async def _discard_job(self, ns: str, name: str) -> None:
        """Delete a Job whose launch failed half way (its Secret could not be made)."""
        try:
            await self._delete_job(ns, name, 0)
        except _API_ERRORS as err:
            log.warning("deleting Job %s/%s: %s", ns, name, _error_text(err))

    def recorded_run(self, record: WorkerRecord) -> KubernetesRunWorker | None:
        """The run's Job, by the ``<namespace>/<name>`` its claim recorded."""
        if not record.worker_id or "/" not in record.worker_id:
            return None
        ns, name = record.worker_id.split("/", 1)
        return KubernetesRunWorker(
            record.run_id, worker_id=record.worker_id, namespace=ns, name=name
        )

    async def terminate_run(self, handle: KubernetesRunWorker, grace_s: float) -> bool:
        """Delete the run's Job and its pod (SIGTERM, SIGKILL after ``grace_s``)."""
        ns, name = handle.namespace, handle.name
        try:
            response = await self._call(
                self._batch.read_namespaced_job, name, ns, _preload_content=False
            )
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        if _job_exit(json.loads(cast(Any, response).data)) is not None:
            return False
        return await self._delete_job(ns, name, grace_s)

    def run_domain(self) -> str:
        """The cluster (its API server) and the launcher's namespace."""
        host = getattr(self._api.configuration, "host", None) or "in-cluster"
        return f"k8s:{host}/{self._namespace}"

    async def run_alive(self, handle: KubernetesRunWorker) -> bool:
        """Whether the run's Job exists and has not finished, as the next shared list of
        the agent's Jobs shows it (list failures are retried within the round first).

        Raises:
            LauncherError: the Jobs could not be listed.
        """
        try:
            job = await self._jobs.next_state(handle.namespace, handle.name)
        except ListRoundError as err:
            raise LauncherError(f"cannot tell whether run {handle.run_id} runs: {err}") from err
        return job is not None and _job_exit(job) is None

    async def wait_run(self, handle: KubernetesRunWorker) -> int:
        """Wait until the shared list of the agent's Jobs shows the run's Job finished;
        its exit code (-1 when it was deleted or could not create its pod).

        API failures never end the wait: a round that failed is logged and the next one
        asked. Why a Job failed beyond its exit code (its Failed condition, the
        FailedCreate events of its pods) goes to ``handle.exit_error``.
        """
        ns, name = handle.namespace, handle.name
        stuck = _Stuck()
        while True:
            try:
                job = await self._jobs.next_state(ns, name)
            except ListRoundError:
                continue  # logged by the round; the next round asks again
            if job is None:
                self._exits[(ns, name)] = -1
                return -1
            code = _job_exit(job)
            if code is not None:
                if code != 0:
                    code = await self._failed_job_code(handle, job, code)
                self._exits[(ns, name)] = code
                return code
            reason = await self._why_stuck(ns, name, job, stuck)
            if reason is not None:
                # The job controller keeps trying to create the pod (quota, admission, Pod
                # Security), or the kubelet to start it (image pull, missing Secret), and
                # the run would wait in STARTING until the control plane gives up: end it
                # now, with the reason.
                handle.exit_error = reason
                log.warning("run %s: %s", handle.run_id, reason)
                try:
                    await self._delete_job(ns, name, 0)
                except _API_ERRORS as err:  # the exit is reported all the same
                    log.warning("deleting Job %s/%s: %s", ns, name, err)
                self._exits[(ns, name)] = -1
                return -1

    async def _why_stuck(
        self, ns: str, name: str, job: dict[str, Any], stuck: _Stuck
    ) -> str | None:
        """Why a run's Job has had no running pod for the whole grace period, if it will
        not get better by waiting (FailedCreate events; a pod waiting for a reason of
        :data:`FATAL_WAITING_REASONS`); None otherwise. Reads the namespace's events or
        pods at most every quarter of the grace period, shared by all runs."""
        status = job.get("status") or {}
        if status.get("ready"):
            stuck.state = None
            return None
        state = "waiting" if status.get("active") else "podless"
        now = time.monotonic()
        if stuck.state != state:
            stuck.state, stuck.since, stuck.checked_at = state, now, 0.0
        grace = self._failed_create_grace
        if now - stuck.since < grace or now - stuck.checked_at < grace / 4:
            return None
        stuck.checked_at = now
        if state == "podless":
            failures = (await self._failed_create_events(ns)).get(name)
            return _failed_create_text(ns, name, failures) if failures else None
        problem = (await self._run_pod_problems(ns)).get(name)
        if problem is None:
            return None
        pod, text = problem
        events = await self._events(ns, pod)
        return text + (f"\n--- events ---\n{events}" if events else "")

    async def _run_pod_problems(self, ns: str) -> dict[str, tuple[str, str]]:
        """Run pods of this agent in ``ns`` that cannot start, by Job name: (pod, why);
        one list per namespace, shared within a quarter of the grace period."""

        async def read() -> dict[str, tuple[str, str]]:
            labels = agent_selector(self._agent, ROLE_RUN)
            try:
                pods = await self._call(
                    self._core.list_namespaced_pod, ns, label_selector=selector_string(labels)
                )
            except _API_ERRORS as err:
                log.warning("listing run pods in %s: %s", ns, err)
                return {}
            found: dict[str, tuple[str, str]] = {}
            for pod in pods.items:
                job_name = (_meta(pod).labels or {}).get("job-name")
                if not _labels_match(pod, labels) or not job_name:
                    continue
                for status in (pod.status.container_statuses or []) if pod.status else []:
                    waiting = status.state.waiting if status.state else None
                    if waiting is not None and waiting.reason in FATAL_WAITING_REASONS:
                        text = f"pod {_name(pod)}: {waiting.reason}: {waiting.message or ''}"
                        found[job_name] = (_name(pod), text)
            return found

        return await self._cached(("pods", ns), read)

    async def _cached(
        self, key: tuple[str, str], read: Callable[[], Awaitable[T]], fresh: bool = False
    ) -> T:
        """``read()``'s answer, shared by every caller within a quarter of the grace
        period (one call for all the runs of a namespace)."""
        async with self._cache_lock:
            now = time.monotonic()
            hit = self._cache.get(key)
            if hit is not None and not fresh and now - hit[0] < self._failed_create_grace / 4:
                return cast(T, hit[1])
            value = await read()
            self._cache[key] = (now, value)
            return value

    async def _failed_job_code(
        self, handle: KubernetesRunWorker, job: dict[str, Any], code: int
    ) -> int:
        """The exit code of a failed Job's container, and why it failed in
        ``handle.exit_error`` (its Failed condition; FailedCreate events if no pod ran)."""
        ns, name = handle.namespace, handle.name
        try:
            pod_code = await self._pod_exit_code(ns, name)
        except _API_ERRORS as err:  # the exit is reported all the same
            log.warning("reading the pod of Job %s/%s: %s", ns, name, err)
            pod_code = None
        reasons = [
            f"Job {ns}/{name} failed: {c.get('reason')}: {c.get('message')}"
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ]
        if pod_code is None:
            failures = (await self._failed_create_events(ns, fresh=True)).get(name)
            if failures:
                reasons.append(_failed_create_text(ns, name, failures))
        if reasons:
            handle.exit_error = "\n".join(reasons)
        return pod_code if pod_code is not None else code

    async def _failed_create_events(self, ns: str, fresh: bool = False) -> dict[str, list[str]]:
        """FailedCreate events of Jobs in ``ns``, by Job name (see :meth:`_cached`)."""

        async def read() -> dict[str, list[str]]:
            try:
                events = await self._call(
                    self._core.list_namespaced_event,
                    ns,
                    field_selector="involvedObject.kind=Job,reason=FailedCreate",
                )
            except _API_ERRORS as err:
                log.warning("listing FailedCreate events in %s: %s", ns, err)
                return {}
            found: dict[str, list[str]] = {}
            for e in events.items:  # also filter here: be strict about what we report
                obj = e.involved_object
                if (
                    e.reason == "FailedCreate"
                    and obj is not None
                    and obj.kind == "Job"
                    and obj.name
                ):
                    found.setdefault(obj.name, []).append(f"{e.type} {e.reason}: {e.message}")
            return found

        return await self._cached(("failed-create", ns), read, fresh)

    async def _list_run_jobs(self, ns: str) -> list[dict[str, Any]]:
        """The agent's run Jobs in ``ns``, as JSON (see :meth:`_list_ours`)."""
        return await self._list_ours(
            self._batch.list_namespaced_job, ns, agent_selector(self._agent, ROLE_RUN)
        )

    async def _list_code_servers(self, ns: str) -> list[dict[str, Any]]:
        """The agent's code-server Deployments in ``ns``, as JSON (see :meth:`_list_ours`)."""
        return await self._list_ours(
            self._apps.list_namespaced_deployment, ns, agent_selector(self._agent, ROLE_CODE_SERVER)
        )

    async def _list_ours(
        self, list_fn: Callable[..., Any], ns: str, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """The objects ``list_fn`` lists in ``ns`` that carry ``labels``, as JSON (one call;
        transient errors retried).

        Raises:
            ListRoundError: the API refused the list, or kept failing past the retries.
        """
        try:
            # The JSON as it comes (_preload_content=False): building the client's models
            # of a thousand Jobs costs ten times the list itself, every interval.
            response = await self._call(
                list_fn, ns, label_selector=selector_string(labels), _preload_content=False
            )
            items = json.loads(cast(Any, response).data)["items"] or []
        except ApiException as err:
            raise ListRoundError(api_message(err)) from err
        except (*_API_ERRORS, ValueError, KeyError) as err:
            raise ListRoundError(str(err)) from err
        return [obj for obj in items if _dict_labels_match(obj, labels)]

    async def _delete_job(self, ns: str, name: str, grace_s: float) -> bool:
        try:
            await self._call(
                self._batch.delete_namespaced_job,
                name,
                ns,
                grace_period_seconds=math.ceil(grace_s),
                propagation_policy="Background",
            )
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    async def _pod_exit_code(self, ns: str, job_name: str) -> int | None:
        pods = await self._call(
            self._core.list_namespaced_pod, ns, label_selector=f"job-name={job_name}"
        )
        for pod in pods.items:
            if (_meta(pod).labels or {}).get("job-name") != job_name:
                continue
            for status in (pod.status.container_statuses or []) if pod.status else []:
                if status.state and status.state.terminated:
                    return int(status.state.terminated.exit_code)
        return None

    def poll_run(self, handle: KubernetesRunWorker) -> int | None:
        """The exit code :meth:`wait_run` observed, else None (no API call)."""
        return self._exits.get((handle.namespace, handle.name))

    async def aclose(self) -> None:
        """Close the API client; Deployments and Jobs live on."""
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
        await self._jobs.aclose()
        await self._code_servers.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()


@dataclass
class _Stuck:
    """How long a run's Job has been without a running pod (podless: none created yet;
    waiting: created, not started), and when that was last looked into."""

    state: str | None = None
    since: float = 0.0
    checked_at: float = 0.0


class _NotOursError(Exception):
    """An object of the name we create exists, without this agent's labels."""


def _json_name(obj: dict[str, Any]) -> str:
    return cast(str, obj["metadata"]["name"])


def _dict_labels_match(obj: dict[str, Any], labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _failed_create_text(ns: str, name: str, failures: list[str]) -> str:
    return f"Job {ns}/{name} could not create its pod:\n" + "\n".join(failures[-5:])


def _job_exit(job: dict[str, Any]) -> int | None:
    """0 once the Job (its JSON) succeeded, 1 once it failed (a pod failed, or its deadline
    passed with none), None while it has not finished."""
    status = job.get("status") or {}
    if status.get("succeeded"):
        return 0
    if status.get("failed"):
        return 1
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return 0 if condition["type"] == "Complete" else 1
    return None

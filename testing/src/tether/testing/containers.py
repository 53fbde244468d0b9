"""Containers that tests start themselves, through testcontainers, from images made here.

No registry is reachable (images come from :mod:`tether.testing.localimage` or a local
``docker build``) and the engine has no bridge network (``dockerd --bridge=none``):

* a :class:`LocalContainer` never pulls: its image must be in the engine, or starting it
  is a clear error naming the image (testcontainers itself would try a pull);
* it runs on the host's network, so a container port *is* the host port: testcontainers'
  port-based waits (``HttpWaitStrategy``, ``PortWaitStrategy``) probe ``127.0.0.1:port``;
* Ryuk, testcontainers' reaper, is off (its image would come from a registry, and it needs
  a mapped port): cleanup is the ``with`` block's (or a fixture finalizer's) ``stop()``,
  and for a test session killed before that (``kill -9``), every container and volume
  carries :data:`LABEL_OWNER`, naming the pytest process; the first container a later
  session starts removes those whose owner process is gone (:func:`sweep_orphans`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import WaitStrategy
from tether.testing import skip_or_fail

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger(__name__)

#: Label of every container and volume a test starts: which process owns it (see
#: :func:`owner_id`; alive: in use; gone: an orphan to remove).
LABEL_OWNER = "io.tether.test.owner"


class LocalImageMissingError(RuntimeError):
    """The image is not in the engine (and nothing here pulls one)."""


def configure_testcontainers() -> None:
    """Set testcontainers up for this host (idempotent).

    Ryuk is off unless ``TESTCONTAINERS_RYUK_DISABLED`` says otherwise (a host that has its
    image and a bridge network may want it); no hub prefix is put before image names (a
    prefix would send local names such as ``tether-local:…`` to a registry).
    """
    if os.environ.get("TESTCONTAINERS_RYUK_DISABLED") is None:
        testcontainers_config.ryuk_disabled = True
    testcontainers_config.hub_image_name_prefix = ""


def engine() -> docker.DockerClient:
    """A client of the local engine, or skip_or_fail naming what is missing."""
    try:
        client = docker.from_env(timeout=900)
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure means: no engine here
        skip_or_fail(f"a Docker engine (.ci/run starts dockerd): {err}")
    return client


def owner_id(pid: int | None = None) -> str | None:
    """``<boot id>:<pid namespace>:<pid>:<start ticks>`` of process ``pid`` (default: this
    one) in this pid namespace; None when it does not exist. The boot id and start time
    tell a reused pid from its owner."""
    pid = os.getpid() if pid is None else pid
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (start time); the command name (field 2) may hold spaces, so split after it.
    start = stat.rsplit(")", 1)[1].split()[19]
    return f"{boot}:{namespace}:{pid}:{start}"


def _orphaned(owner: str) -> bool:
    """Whether the process ``owner`` names is known to be gone: another boot's, or a pid
    of our namespace that is not (or no longer) that process. A process of another pid
    namespace (a test session in a container) cannot be seen from here: kept."""
    mine = owner_id()
    parts = owner.split(":")
    if mine is None or len(parts) != 4 or not parts[2].isdigit():
        return False  # not a label of ours to judge
    boot, namespace = mine.split(":")[:2]
    if parts[0] != boot:
        return True
    if parts[1] != namespace:
        return False
    return owner_id(int(parts[2])) != owner


def owner_labels() -> dict[str, str]:
    """The labels that tie a container or volume to this test process."""
    owner = owner_id()
    assert owner is not None
    return {LABEL_OWNER: owner}


def sweep_orphans(client: docker.DockerClient) -> list[str]:
    """Remove the containers and volumes of test processes that are gone (killed before
    their finalizers ran); return the names of what was removed. Others' live test
    sessions on the same engine keep theirs."""
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER}):
        if _orphaned(container.labels.get(LABEL_OWNER, "")):
            try:
                container.remove(force=True, v=True)
                removed.append(str(container.name))
            except docker.errors.NotFound:
                pass  # another session's sweep was first
    for vol in client.volumes.list(filters={"label": LABEL_OWNER}):
        if _orphaned((vol.attrs.get("Labels") or {}).get(LABEL_OWNER, "")):
            try:
                vol.remove(force=True)
                removed.append(str(vol.name))
            except docker.errors.APIError as err:  # in use, or already gone
                log.debug("keeping volume %s: %s", vol.name, err)
    if removed:
        log.warning("removed what killed test sessions left: %s", removed)
    return removed


_SWEPT = False


class LocalContainer(DockerContainer):
    """A testcontainers container of a local image on the host's network.

    Use it as a context manager (``with LocalContainer(image, ...) as c:``) or stop it in a
    fixture's finalizer. Its labels tie it to this test process (see the module doc).

    Args:
        image: a tag or id present in the engine (never pulled).
        command: the command (argv list).
        entrypoint: the entrypoint (argv list), replacing the image's.
        env: environment variables.
        user: ``uid[:gid]`` to run as (default: the image's).
        volumes: ``(source, target, mode)``: a host path (absolute) or a volume name.
        wait: how to know it is ready (a testcontainers wait strategy); None: once started.
        labels: further labels.
        **kwargs: further arguments of ``docker.containers.create``.
    """

    def __init__(
        self,
        image: str,
        *,
        command: Sequence[str] | None = None,
        entrypoint: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        volumes: Sequence[tuple[str, str, str]] = (),
        wait: WaitStrategy | None = None,
        labels: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        configure_testcontainers()
        create: dict[str, Any] = {
            "network_mode": "host",
            "labels": {**(labels or {}), **owner_labels()},
            **kwargs,
        }
        if entrypoint is not None:
            create["entrypoint"] = list(entrypoint)
        if user is not None:
            create["user"] = user
        super().__init__(image, env=dict(env or {}), _wait_strategy=wait, **create)
        if command is not None:
            self.with_command(list(command))
        for source, target, mode in volumes:
            self.with_volume_mapping(source, target, mode)

    def start(self) -> Self:
        """Start it (and wait, if a wait strategy is set).

        Raises:
            LocalImageMissingError: the image is not in the engine.
        """
        global _SWEPT
        client = self.get_docker_client().client
        if not _SWEPT:
            sweep_orphans(client)
            _SWEPT = True
        try:
            client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise LocalImageMissingError(
                f"image {self.image!r} is not in the engine (no registry here: build it first,"
                " e.g. with tether.testing.localimage.build_local_image)"
            ) from None
        return super().start()

    def get_container_host_ip(self) -> str:
        """Loopback: the container shares the host's network."""
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        """``port`` itself: on the host's network a container port is the host's."""
        return port

    def run_once(self, timeout_s: float = 120) -> tuple[int, str, str]:
        """Start it, wait for it to exit, remove it; return (exit code, stdout, stderr)."""
        try:
            self.start()
            status = self.get_wrapped_container().wait(timeout=timeout_s)
            stdout, stderr = self.get_logs()
        finally:
            self.stop()
        return int(status["StatusCode"]), stdout.decode(), stderr.decode()


def volume(client: docker.DockerClient, name: str) -> str:
    """Create a named volume owned by this test process (removed by its finalizer, or by
    :func:`sweep_orphans` after a kill); return its name."""
    client.volumes.create(name, labels=owner_labels())
    return name

"""The one place that decides what user code gets: its environment and its arguments.

Code servers, fork servers (and so warm run workers) and cold run workers run the user's
code; the launcher holds the agent token, NATS credentials and cloud credentials. Nothing
of the launcher's environment reaches user code except, on the process substrate, an
allowlist (:data:`BASE_ENV`: what the interpreter and locale need, ``OTEL_*``) and the
operator's pass-through patterns (``TETHER_LAUNCHER_USER_CODE_ENV_PASSTHROUGH``, minus
the agent's secrets and cloud credentials: :data:`NEVER_PASSED`). Containers get only the
location's env and the launcher's extras. In every case, from lowest to highest
precedence: base, pass-through, the location's env (references resolved, see
:mod:`tether.shared.wire.envrefs`), then the extras the launcher chose for this process
(``TRACEPARENT``, per-run credentials...), which a location cannot override.

Env values never travel on a command line: :func:`tether.shared.wire.process.argv_location`
is the location as user code processes receive it in ``--location-json`` /
``ExecuteRunArgs`` (env names only).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dotenv import dotenv_values
from tether.launcher.errors import LocationRefusedError
from tether.launcher.policy import (
    NEVER_REFERENCED,
    LocationPolicy,
    PolicyCheck,
    PolicyContext,
    env_references,
)
from tether.shared.wire.envrefs import AWS_SECRET, ENV, K8S_SECRET, EnvReference
from tether.shared.wire.locations import LocationConfig

#: What a process-substrate child takes from the launcher's environment, always: the
#: interpreter's and locale's needs (``PYTHONPATH``/``PYTHONHOME``/``VIRTUAL_ENV`` as
#: the operator set them for the launcher's own Python), and tracing.
BASE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "TERM",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "OTEL_*",
)

#: Always passed through (with the setting's patterns): the user-code side's own settings
#: and the shared log format.
DEFAULT_PASSTHROUGH = (
    "TETHER_RUN_WORKER_*",
    "TETHER_CODESERVER_*",
    "TETHER_LOG_FORMAT",
)

#: Never passed through from the launcher's environment, whatever the settings say: the
#: agent's token, every agent service's settings, NATS credentials, anything that looks
#: like a key or token, and cloud credentials (a location names those it needs with a
#: ``${env:...}`` reference).
NEVER_PASSED = (
    "TETHER_AGENT_TOKEN",
    "TETHER_TOKEN",
    "TETHER_LAUNCHER_*",
    "TETHER_POLLER_*",
    "TETHER_EVENTRELAY_*",
    "TETHER_LOGSHIP_*",
    "TETHER_CONTROLPLANE_*",
    "TETHER_NATS_*",
    "NATS_*",
    "TETHER_*TOKEN*",
    "TETHER_*SECRET*",
    "TETHER_*KEY*",
    "TETHER_*PASSWORD*",
    "TETHER_*CRED*",
    "AWS_*",
    "AZURE_*",
    "ARM_*",
    "GOOGLE_*",
    "GCLOUD_*",
    "CLOUDSDK_*",
    "KUBERNETES_*",
    "KUBECONFIG",
    "DOCKER_*",
)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class UserEnv:
    """The environment of one user-code process or container.

    Attributes:
        values: plain name -> value.
        k8s_secrets: name -> (Secret, key): ``valueFrom.secretKeyRef`` entries (k8s).
        aws_secrets: name -> ARN: ECS container ``secrets`` (ecs).
    """

    values: dict[str, str] = field(default_factory=dict)
    k8s_secrets: dict[str, tuple[str, str]] = field(default_factory=dict)
    aws_secrets: dict[str, str] = field(default_factory=dict)


class UserCode:
    """Admits location configs (the policy) and builds user code's environment.

    Built once per launcher (:func:`tether.launcher.service.make_substrate`) and given to
    its substrate, which calls :meth:`admit` before it starts anything for a location and
    :meth:`process_env` / :meth:`container_env` for each process or container.

    Args:
        policy: the agent's location policy.
        context: what the launcher is configured with (substrate, default image...).
        passthrough: patterns of launcher env names passed to process children (beyond
            :data:`DEFAULT_PASSTHROUGH`).
        env_files: docker ``--env-file`` style files ``${env:NAME}`` reads first.
        source_env: the launcher's environment (``os.environ`` at startup).
    """

    def __init__(
        self,
        policy: LocationPolicy | None = None,
        context: PolicyContext | None = None,
        *,
        passthrough: Sequence[str] = (),
        env_files: Sequence[str] = (),
        source_env: Mapping[str, str] | None = None,
    ) -> None:
        self.policy = policy or LocationPolicy()
        self.context = context or PolicyContext(substrate="process", cwd=os.getcwd())
        self._check = PolicyCheck(self.policy, self.context)
        self._passthrough = (*DEFAULT_PASSTHROUGH, *passthrough)
        self._env_files = tuple(env_files)
        self._source = dict(os.environ if source_env is None else source_env)
        # The launcher's environment is read once: what every process child takes from it.
        self._base = {
            k: v
            for k, v in self._source.items()
            if _matches(k, BASE_ENV)
            or (_matches(k, self._passthrough) and not _matches(k, NEVER_PASSED))
        }

    @classmethod
    def default(cls, substrate: str, default_image: str | None = None) -> UserCode:
        """The default policy for ``substrate``, with this process's environment."""
        return cls(
            context=PolicyContext(substrate=substrate, default_image=default_image, cwd=os.getcwd())
        )

    def admit(self, location: LocationConfig) -> UserEnv:
        """Refuse ``location`` if the policy does not allow it, or a reference is bad;
        else return its env with the references resolved (:meth:`resolve`).

        Raises:
            LocationRefusedError: the location's load error.
        """
        self._check.check(location)
        return self.resolve(location)

    def admit_image_user(self, location: LocationConfig, image: str, image_user: str) -> None:
        """Refuse a container whose image runs as root, unless the location or policy says.

        Raises:
            LocationRefusedError: see :meth:`PolicyCheck.check_image_user`.
        """
        self._check.check_image_user(location, image, image_user)

    def resolve(self, location: LocationConfig) -> UserEnv:
        """The location's env with its references resolved for this substrate.

        Raises:
            LocationRefusedError: a reference the policy refuses or that names nothing.
        """
        out = UserEnv()
        files: dict[str, str] | None = None
        for name, value in env_references(location).items():
            if not isinstance(value, EnvReference):
                out.values[name] = value
            elif value.kind == ENV:
                if files is None:
                    files = self._read_env_files(location)
                out.values[name] = self._agent_value(location, name, value, files)
            elif value.kind == K8S_SECRET:
                out.k8s_secrets[name] = (value.secret_name, value.secret_key)
            elif value.kind == AWS_SECRET:
                out.aws_secrets[name] = value.target
        return out

    def _read_env_files(self, location: LocationConfig) -> dict[str, str]:
        values: dict[str, str] = {}
        for path in self._env_files:
            if not os.path.isfile(path):
                raise LocationRefusedError(
                    location.name,
                    f"env file {path!r} (TETHER_LAUNCHER_USER_CODE_ENV_FILES) is missing",
                )
            try:
                parsed = dotenv_values(path, interpolate=False)
            except (OSError, UnicodeDecodeError) as err:
                raise LocationRefusedError(
                    location.name, f"env file {path!r} cannot be read: {err}"
                ) from err
            values.update({k: v for k, v in parsed.items() if v is not None})
        return values

    def _agent_value(
        self, location: LocationConfig, name: str, ref: EnvReference, files: Mapping[str, str]
    ) -> str:
        target = ref.target
        if target in files:
            return files[target]
        if _matches(target, NEVER_REFERENCED) or not _matches(target, self.policy.env_refs):
            raise LocationRefusedError(
                location.name,
                f"env {name}: {ref} is not allowed to read the agent's environment "
                "(policy env_refs; TETHER_* and NATS_* never)",
            )
        if target not in self._source:
            raise LocationRefusedError(
                location.name,
                f"env {name}: {ref} names a variable set neither in the agent's env files "
                "nor in its environment",
            )
        return self._source[target]

    def base_env(self) -> dict[str, str]:
        """What a process child takes from the launcher's environment (base + pass-through)."""
        return dict(self._base)

    def process_env(self, location: LocationConfig, extras: Mapping[str, str]) -> dict[str, str]:
        """The whole environment of a process-substrate child for ``location``.

        Raises:
            LocationRefusedError: refused by the policy, or a reference cannot be resolved.
        """
        return {**self._base, **self.admit(location).values, **extras}

    def container_env(self, location: LocationConfig, extras: Mapping[str, str]) -> UserEnv:
        """The environment of a container: the location's env and ``extras``, nothing else.

        Raises:
            LocationRefusedError: refused by the policy, or a reference cannot be resolved.
        """
        resolved = self.admit(location)
        for name in extras:
            resolved.k8s_secrets.pop(name, None)
            resolved.aws_secrets.pop(name, None)
        resolved.values.update(extras)
        return resolved

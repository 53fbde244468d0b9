"""The agent-side location policy: what a code location's config may ask of this agent.

A location's config comes from the control plane, where an editor writes it. The agent's
operator bounds it here (``TETHER_LAUNCHER_LOCATION_POLICY``, JSON): which directories
and modules a process location may load, which images, mounts and users containers may
have, which Kubernetes service accounts and secrets, which ECS roles and secret ARNs.
Anything outside is refused before anything starts (:class:`LocationRefusedError`, the
location's load error). The defaults are the safe ones: code only from under the
launcher's working directory, no stdlib or installed modules as a location, no
interpreter-hijacking env, the launcher's configured images only, no host mounts, no
root, no service account, no secret, the launcher's configured ECS roles only.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tether.launcher.errors import LocationRefusedError
from tether.shared.wire.envrefs import (
    AWS_SECRET,
    ENV,
    K8S_SECRET,
    EnvReference,
    EnvReferenceError,
    parse_env_value,
)
from tether.shared.wire.locations import LocationConfig

#: Env names a process location may not set: they make the interpreter or the dynamic
#: linker run something other than the location's code (``PYTHONWARNINGS`` imports the
#: module of a warning category, ``PYTHONSTARTUP``/``PYTHONINSPECT`` act on an
#: interactive prompt, ``BROWSER`` is what ``webbrowser`` runs...).
DEFAULT_DENIED_ENV = (
    "LD_*",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "PYTHONPLATLIBDIR",
    "PYTHONBREAKPOINT",
    "PYTHONWARNINGS",
    "PYTHONPYCACHEPREFIX",
    "PYTHONSAFEPATH",
    "BROWSER",
)

#: Agent env names a ``${env:...}`` reference can never read, whatever the policy says:
#: the agent's own settings (its token, NATS credentials, signing keys) live there.
NEVER_REFERENCED = ("TETHER_*", "NATS_*")

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ROOT_USERS = ("root", "0")


class LocationPolicy(BaseModel):
    """What locations may use on this agent (``TETHER_LAUNCHER_LOCATION_POLICY``, JSON).

    List fields of names take shell-style patterns (``fnmatch``); image entries are
    prefixes (end one with ``/`` or ``:`` to mean a whole registry path or repository).
    """

    model_config = ConfigDict(extra="forbid")

    roots: list[str] | None = Field(
        default=None,
        description=(
            "Process substrate: directories a location's working_directory, python_file "
            "and module must be under (symlinks resolved). Unset: the launcher's working "
            "directory (tether dev adds its workspace file's directory)."
        ),
    )
    modules: list[str] = Field(
        default_factory=list,
        description=(
            "Process substrate: module names (patterns) a location may import from the "
            "installed environment instead of from its working directory. Standard "
            "library modules are refused whatever this says."
        ),
    )
    denied_env: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENIED_ENV),
        description=(
            "Process substrate: env names (patterns) a location may not set (the "
            "interpreter's and dynamic linker's: LD_*, PYTHONPATH, PYTHONWARNINGS...)."
        ),
    )
    env_refs: list[str] = Field(
        default_factory=lambda: ["*"],
        description=(
            "Agent env names (patterns) a ${env:NAME} reference may read from the "
            "launcher's environment (names found in the env files need no pattern); "
            "TETHER_* and NATS_* never, from either."
        ),
    )
    images: list[str] | None = Field(
        default=None,
        description=(
            "Container substrates: image prefixes a location may name. Unset: only the "
            "launcher's configured image (docker.image, k8s.image, ecs.image)."
        ),
    )
    docker_volumes: list[str] = Field(
        default_factory=list,
        description=(
            "Docker: host directories (bind mounts under them) and named volumes a "
            "location may mount. Default: none."
        ),
    )
    docker_allow_root: bool = Field(
        default=False, description="Docker: allow a location's container user to be root/0."
    )
    k8s_service_accounts: list[str] = Field(
        default_factory=list,
        description=(
            "K8s: service accounts (patterns) a location may name. Default: none (the "
            "namespace's default account)."
        ),
    )
    k8s_secrets: list[str] = Field(
        default_factory=list,
        description=(
            "K8s: Secrets (patterns) a location may read through env_from_secrets or "
            "${k8s-secret:...}. Default: none. The agent's own Secret never."
        ),
    )
    k8s_allow_unrestricted: bool = Field(
        default=False,
        description=(
            "K8s: allow a location's kubernetes.security to leave the restricted Pod "
            "Security Standard (root, privilege escalation, added capabilities, "
            "unconfined seccomp)."
        ),
    )
    k8s_agent_secret: str = Field(
        default="tether-agent",
        description="K8s: the Secret holding the agent token, refused to every location.",
    )
    ecs_task_roles: list[str] = Field(
        default_factory=list,
        description="ECS: task role ARNs a location may name beyond the launcher's configured one.",
    )
    ecs_execution_roles: list[str] = Field(
        default_factory=list,
        description=(
            "ECS: execution role ARNs a location may name beyond the launcher's configured one."
        ),
    )
    aws_secrets: list[str] = Field(
        default_factory=list,
        description=(
            "ECS: Secrets Manager/SSM ARNs (patterns) a location may read through ecs.secrets "
            "or ${aws-secret:...}. Default: none."
        ),
    )


@dataclass(frozen=True)
class PolicyContext:
    """What the launcher itself is configured with, which the policy's defaults refer to.

    Attributes:
        substrate: the substrate this launcher serves.
        default_image: the launcher's image of locations that name none.
        ecs_task_role: the launcher's configured task role of user code (ECS).
        ecs_execution_role: the launcher's configured execution role (ECS).
        cwd: the launcher's working directory (the default root).
    """

    substrate: str
    default_image: str | None = None
    ecs_task_role: str | None = None
    ecs_execution_role: str | None = None
    cwd: str = "."


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def env_references(location: LocationConfig) -> dict[str, EnvReference | str]:
    """The location's env, each value parsed (a reference, or the literal it stands for).

    Raises:
        LocationRefusedError: a malformed reference.
    """
    parsed: dict[str, EnvReference | str] = {}
    for name, value in location.env.items():
        try:
            parsed[name] = parse_env_value(value)
        except EnvReferenceError as err:
            raise LocationRefusedError(location.name, f"env {name}: {err}") from None
    return parsed


class PolicyCheck:
    """Checks location configs against a :class:`LocationPolicy` for one launcher.

    Args:
        policy: the operator's policy.
        context: the launcher's own configuration.
    """

    def __init__(self, policy: LocationPolicy, context: PolicyContext) -> None:
        self.policy = policy
        self.context = context
        base = Path(context.cwd).resolve()
        self._roots = [
            (base / r).resolve() for r in (policy.roots if policy.roots is not None else ["."])
        ]

    def check(self, location: LocationConfig) -> None:
        """Refuse ``location`` unless everything it asks for is allowed.

        Raises:
            LocationRefusedError: what is refused and which policy field allows it.
        """
        refuse = self._refusal(location)
        if refuse is not None:
            raise LocationRefusedError(location.name, refuse)

    def _refusal(self, location: LocationConfig) -> str | None:
        substrate = self.context.substrate
        for check in (
            self._module,
            self._references,
            {
                "process": self._process,
                "docker": self._docker,
                "k8s": self._k8s,
                "ecs": self._ecs,
            }.get(substrate, lambda _: None),
        ):
            reason = check(location)
            if reason is not None:
                return reason
        return None

    def _module(self, location: LocationConfig) -> str | None:
        module = location.module
        if module is None:
            return None
        if _MODULE_NAME.fullmatch(module) is None:
            return f"module {module!r} is not a module name"
        top = module.partition(".")[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names:
            return (
                f"module {module!r} is part of Python's standard library; a location "
                "loads its own code"
            )
        return None

    def _references(self, location: LocationConfig) -> str | None:
        p = self.policy
        allowed_kind = {"process": ENV, "docker": ENV, "k8s": K8S_SECRET, "ecs": AWS_SECRET}
        for name, value in env_references(location).items():
            if not isinstance(value, EnvReference):
                continue
            if value.kind != allowed_kind.get(self.context.substrate):
                where = {ENV: "process or docker", K8S_SECRET: "k8s", AWS_SECRET: "ecs"}
                return (
                    f"env {name}: a {value.kind} reference needs the {where[value.kind]} "
                    f"substrate, not {self.context.substrate}"
                )
            if value.kind == ENV and _matches(value.target, NEVER_REFERENCED):
                return f"env {name}: {value} names an agent setting, never given to user code"
            if value.kind == K8S_SECRET and (reason := self._k8s_secret(value.secret_name)):
                return f"env {name}: {reason}"
            if value.kind == AWS_SECRET and not _matches(value.target, p.aws_secrets):
                return f"env {name}: secret {value.target} is not in the policy's aws_secrets"
        return None

    def _process(self, location: LocationConfig) -> str | None:
        p = self.policy
        for name in location.env:
            if _matches(name, p.denied_env):
                return f"env {name} changes how the interpreter starts (policy denied_env)"
        cwd = Path(self.context.cwd).resolve()
        workdir = (
            (cwd / location.working_directory).resolve() if location.working_directory else cwd
        )
        if location.working_directory and not _under(workdir, self._roots):
            return f"working_directory {location.working_directory!r} is {self._outside()}"
        if location.python_file:
            path = (workdir / location.python_file).resolve()
            if not _under(path, self._roots):
                return f"python_file {location.python_file!r} is {self._outside()}"
        if location.module and not _matches(location.module, p.modules):
            found = _module_source(workdir, location.module.partition(".")[0])
            if found is None:
                return (
                    f"module {location.module!r} is not in the location's working directory "
                    f"({workdir}); an installed module must be in the policy's modules"
                )
            if not _under(found.resolve(), self._roots):
                return f"module {location.module!r} ({found}) is {self._outside()}"
        return None

    def _outside(self) -> str:
        roots = ", ".join(str(r) for r in self._roots)
        return f"outside the directories the agent allows (policy roots: {roots})"

    def _image(self, location: LocationConfig) -> str | None:
        image = location.image
        if image is None or image == self.context.default_image:
            return None
        prefixes = self.policy.images or []
        if any(image.startswith(prefix) for prefix in prefixes):
            return None
        allowed = ", ".join(prefixes) or f"only the launcher's {self.context.default_image!r}"
        return f"image {image!r} is not allowed (policy images: {allowed})"

    def _docker(self, location: LocationConfig) -> str | None:
        if (reason := self._image(location)) is not None:
            return reason
        cc = location.container
        if cc is None:
            return None
        for volume in cc.volumes:
            source = volume.split(":", 1)[0]
            if source.startswith("/"):
                allowed = [
                    Path(v).resolve() for v in self.policy.docker_volumes if v.startswith("/")
                ]
                ok = _under(Path(os.path.realpath(source)), allowed)
            else:
                ok = source in self.policy.docker_volumes
            if not ok:
                return (
                    f"volume {volume!r}: mounting {source!r} is not allowed (policy docker_volumes)"
                )
        if cc.user is not None and not self.policy.docker_allow_root and _is_root(cc.user):
            return f"container user {cc.user!r} is root (policy docker_allow_root)"
        return None

    def check_image_user(self, location: LocationConfig, image: str, image_user: str) -> None:
        """Refuse a container that would run as root because its image's USER is root.

        Only when the location sets no ``container.user`` (that one is checked by
        :meth:`check`). Called once the image is present, before a container is created.

        Raises:
            LocationRefusedError: the image runs as root and the policy does not allow it.
        """
        cc = location.container
        if (cc is None or cc.user is None) and not self.policy.docker_allow_root:
            if _is_root(image_user):
                raise LocationRefusedError(
                    location.name,
                    f"image {image!r} runs as root (USER {image_user or 'unset'}): set the "
                    "location's container.user to a non-root user, or the policy's "
                    "docker_allow_root",
                )

    def _k8s_secret(self, secret: str) -> str | None:
        if secret == self.policy.k8s_agent_secret:
            return f"secret {secret!r} holds the agent's token, never given to user code"
        if not _matches(secret, self.policy.k8s_secrets):
            return f"secret {secret!r} is not in the policy's k8s_secrets"
        return None

    def _k8s(self, location: LocationConfig) -> str | None:
        if (reason := self._image(location)) is not None:
            return reason
        kc = location.kubernetes
        if kc is None:
            return None
        account = kc.service_account
        if account is not None and not _matches(account, self.policy.k8s_service_accounts):
            return (
                f"service account {account!r} is not allowed (policy k8s_service_accounts; "
                "default: none, pods run as the namespace's default account)"
            )
        for secret in kc.env_from_secrets:
            if (reason := self._k8s_secret(secret)) is not None:
                return f"env_from_secrets: {reason}"
        if kc.security is not None and not self.policy.k8s_allow_unrestricted:
            if breaches := kc.security.unrestricted():
                return (
                    f"kubernetes.security leaves the restricted Pod Security Standard "
                    f"({'; '.join(breaches)}): allowed only by the policy's "
                    "k8s_allow_unrestricted"
                )
        return None

    def _ecs(self, location: LocationConfig) -> str | None:
        if (reason := self._image(location)) is not None:
            return reason
        ec = location.ecs
        if ec is None:
            return None
        p, c = self.policy, self.context
        if ec.task_role_arn and ec.task_role_arn not in {c.ecs_task_role, *p.ecs_task_roles}:
            return f"task role {ec.task_role_arn!r} is not allowed (policy ecs_task_roles)"
        if ec.execution_role_arn and ec.execution_role_arn not in {
            c.ecs_execution_role,
            *p.ecs_execution_roles,
        }:
            return (
                f"execution role {ec.execution_role_arn!r} is not allowed "
                "(policy ecs_execution_roles)"
            )
        for name, arn in ec.secrets.items():
            if not _matches(arn, p.aws_secrets):
                return f"ecs.secrets {name}: {arn} is not in the policy's aws_secrets"
        return None


def _is_root(user: str) -> bool:
    """Whether a docker ``user`` (``name|uid[:group|gid]``; empty: the default) is root."""
    name = user.split(":", 1)[0].strip()
    return name in _ROOT_USERS or not name


def _module_source(directory: Path, top: str) -> Path | None:
    """Where ``top`` would be imported from in ``directory`` (a file or package), if there.

    Looked up on the filesystem only: importing (even finding a submodule's spec) would
    run the location's code inside the launcher.
    """
    for candidate in (directory / top, directory / f"{top}.py"):
        if candidate.exists():
            return candidate
    for candidate in directory.glob(f"{top}.*"):
        if candidate.suffix in (".so", ".pyd", ".pyc"):
            return candidate
    return None

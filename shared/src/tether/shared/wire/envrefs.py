"""Secret references in a code location's ``env``: the syntax, parsed without any I/O.

A location's ``env`` maps names to strings. A value that is exactly ``${KIND:TARGET}`` is a
*reference*, resolved inside the agent when the location's code server or run worker
starts, so that the control plane stores only the reference, never the secret:

- ``${env:NAME}``: the variable ``NAME`` of one of the launcher's env files
  (``TETHER_LAUNCHER_USER_CODE_ENV_FILES``, docker ``--env-file`` format), else of the
  launcher's own environment (never a ``TETHER_*`` or ``NATS_*`` name; the agent's
  location policy may narrow the names further). Process and docker substrates.
- ``${k8s-secret:SECRET/KEY}``: key ``KEY`` of the Kubernetes Secret ``SECRET`` in the
  pod's namespace, as an ``env[].valueFrom.secretKeyRef`` (k8s substrate only; the
  policy names the secrets a location may use).
- ``${aws-secret:ARN}``: a Secrets Manager secret or SSM parameter ARN, as an ECS
  container ``secrets[].valueFrom`` resolved by the task's execution role (ecs substrate
  only; the policy names the ARNs allowed).

Any other value is a literal. ``$${...}`` is the escape for a literal that starts with
``${`` (one ``$`` is dropped). A value ``${word:...}`` whose kind is none of the above is
an error rather than a literal, so that a typo never ships the reference text as a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "AWS_SECRET",
    "ENV",
    "K8S_SECRET",
    "KINDS",
    "EnvReference",
    "EnvReferenceError",
    "is_reference",
    "parse_env_value",
]

#: ``${env:NAME}``: from the agent's env files or environment.
ENV = "env"
#: ``${k8s-secret:SECRET/KEY}``: a key of a Kubernetes Secret.
K8S_SECRET = "k8s-secret"
#: ``${aws-secret:ARN}``: a Secrets Manager secret or SSM parameter.
AWS_SECRET = "aws-secret"
#: Every kind of reference.
KINDS = (ENV, K8S_SECRET, AWS_SECRET)

_REFERENCE = re.compile(r"\$\{(?P<kind>[a-z][a-z0-9-]*):(?P<target>[^{}]+)\}", re.DOTALL)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A Secret's name is a DNS-1123 subdomain; its keys are [-._a-zA-Z0-9]+.
_K8S_TARGET = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+")
_AWS_TARGET = re.compile(r"arn:aws[a-z-]*:(secretsmanager|ssm):[^\s]+")


class EnvReferenceError(ValueError):
    """A value looks like a reference but is not a valid one (the message says why)."""


@dataclass(frozen=True)
class EnvReference:
    """A parsed reference.

    Attributes:
        kind: ``env``, ``k8s-secret`` or ``aws-secret``.
        target: what it names (a variable name, ``SECRET/KEY``, an ARN).
    """

    kind: str
    target: str

    @property
    def secret_name(self) -> str:
        """The Kubernetes Secret of a ``k8s-secret`` reference."""
        return self.target.partition("/")[0]

    @property
    def secret_key(self) -> str:
        """The key within the Secret of a ``k8s-secret`` reference."""
        return self.target.partition("/")[2]

    def __str__(self) -> str:
        return f"${{{self.kind}:{self.target}}}"


def parse_env_value(value: str) -> EnvReference | str:
    """A location env value as a reference, or the literal it stands for.

    Raises:
        EnvReferenceError: ``${kind:...}`` of an unknown kind or with a malformed target.
    """
    if value.startswith("$${"):
        return value[1:]
    match = _REFERENCE.fullmatch(value)
    if match is None:
        return value
    kind, target = match["kind"], match["target"]
    pattern = {ENV: _ENV_NAME, K8S_SECRET: _K8S_TARGET, AWS_SECRET: _AWS_TARGET}.get(kind)
    if pattern is None:
        raise EnvReferenceError(
            f"{value!r}: unknown reference kind {kind!r} (known: {', '.join(KINDS)}; "
            "write $${...} for a literal)"
        )
    if pattern.fullmatch(target) is None:
        expected = {
            ENV: "a variable name",
            K8S_SECRET: "SECRET/KEY",
            AWS_SECRET: "a Secrets Manager or SSM parameter ARN",
        }[kind]
        raise EnvReferenceError(f"{value!r}: the target of a {kind} reference must be {expected}")
    return EnvReference(kind, target)


def is_reference(value: str) -> bool:
    """Whether ``value`` is a reference (a malformed one counts: it is no plain value)."""
    try:
        return isinstance(parse_env_value(value), EnvReference)
    except EnvReferenceError:
        return True

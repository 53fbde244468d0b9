"""Location env values are write-only through the API: reads show names and a mask.

A location's ``env`` may hold secrets (database passwords, API keys). The agent needs
them, so they travel in its work items; nobody reading the API does, whatever their role.
So every read of a location config (``codeLocations { config }``, mutation answers, the UI,
``tether location list``) goes through :func:`mask_location_config`, and a write may send
the mask back in place of a value to keep the stored one (see :func:`keep_masked_env`),
which is how a client edits a config it can only read masked.

A value that is a *reference* (resolved inside the agent, see :func:`is_reference`) names
where a secret lives rather than holding it, so it is shown as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.controlplane.errors import BadInputError
from tether.shared.wire import envrefs

#: What a read shows instead of an env value; sent back in a write, it keeps the stored value.
MASK = "***"


def is_reference(value: Any) -> bool:
    """Whether an env value names a secret kept elsewhere instead of holding one.

    A string is one when it is a whole ``${kind:target}`` reference (of any kind: one the
    agent does not know is refused there, and holds no secret either); anything else,
    an ARN or a path written bare included, is a literal the user code receives, so it is
    masked. A structured value (a JSON object) would be a reference too: a plain value is
    a string. The agent decides what resolves; this only decides what may be shown.
    """
    if isinstance(value, Mapping):
        return True
    # The agent's own syntax (tether.shared.wire.envrefs): ``${env:NAME}``,
    # ``${k8s-secret:SECRET/KEY}``, ``${aws-secret:ARN}``; ``$${...}`` escapes a literal.
    return isinstance(value, str) and envrefs.is_reference(value)


def mask_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """``env`` with every value that is not a reference replaced by :data:`MASK`."""
    return {name: value if is_reference(value) else MASK for name, value in env.items()}


def mask_location_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A location config (its stored JSON) as any API read may show it.

    Only ``env`` holds values: the container, Kubernetes and ECS settings name secrets
    (``env_from_secrets``, ``image_pull_secrets``, ECS ``secrets`` ARNs) but hold none.
    """
    masked = dict(config)
    env = config.get("env")
    if isinstance(env, Mapping):
        masked["env"] = mask_env(env)
    return masked


def keep_masked_env(config: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config a write stores, given what it sent and the location's stored config.

    - ``env`` absent: the stored env is kept whole (so a client may update other fields
      without ever holding the values);
    - ``env`` given: it replaces the stored env (a name left out is removed), except that
      a value equal to :data:`MASK` keeps that name's stored value, which is what a client
      sends back after editing a config it read.

    Args:
        config: the config the request sent (a JSON object).
        stored: the stored config of the location, or None when it is being added.

    Raises:
        BadInputError: a masked value with no stored value to keep (nothing is changed).
    """
    stored_env: Mapping[str, Any] = (stored or {}).get("env") or {}
    merged = dict(config)
    if "env" not in config:
        if stored_env:
            merged["env"] = dict(stored_env)
        return merged
    env = config["env"]
    if not isinstance(env, Mapping):
        return merged  # the config's validation names the field
    kept: dict[str, Any] = {}
    unknown: list[str] = []
    for name, value in env.items():
        if value == MASK:
            if name in stored_env:
                kept[name] = stored_env[name]
            else:
                unknown.append(str(name))
        else:
            kept[name] = value
    if unknown:
        what = "this new location" if stored is None else "this location"
        raise BadInputError(
            f"invalid location config: env: {', '.join(sorted(unknown))}: {MASK!r} keeps a "
            f"stored value, and {what} has none under that name; send the value"
        )
    merged["env"] = kept
    return merged

"""Resources: configured clients (a database, an API, an IO manager) that assets use.

A resource is a pydantic model (:class:`ConfigurableResource`) given to
``Definitions(resources={"key": Resource(...)})``; an asset uses it as a typed parameter
(``def orders(db: Warehouse)``, the key being the parameter's name) or by
``required_resource_keys`` (then ``context.resources.key``). A field may be an
:class:`EnvVar`: its value is read from the run worker's environment when the run uses
the resource, in the customer's environment, and never travels to the control plane.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError
from tether.sdk._errors import DefinitionError


class EnvVar(str):
    """A resource field read from an environment variable when the run uses the resource.

    ``Warehouse(password=EnvVar("WAREHOUSE_PASSWORD"))``. The value is the variable's
    name until then (string fields only).
    """

    __slots__ = ()

    @property
    def name(self) -> str:
        """The environment variable's name."""
        return str(self)

    def __repr__(self) -> str:
        return f"EnvVar({str(self)!r})"


class ResourceError(DefinitionError):
    """A resource cannot be made for a run (a missing variable, an invalid value)."""


class ConfigurableResource(BaseModel):
    """Base of resources: subclass it with the fields that configure the client.

    Instances are immutable; :meth:`resolved` gives the instance with its
    :class:`EnvVar` fields read from an environment.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    _env_fields: dict[str, str] = PrivateAttr(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        env = {k: v.name for k, v in data.items() if isinstance(v, EnvVar)}
        try:
            # An EnvVar is a str: validated as its name, a placeholder until resolved.
            super().__init__(**data)
        except ValidationError as err:
            raise DefinitionError(f"{type(self).__name__}: invalid configuration: {err}") from err
        self._env_fields = env

    @property
    def env_vars(self) -> dict[str, str]:
        """Field -> the environment variable it is read from."""
        return dict(self._env_fields)

    def resolved(self, environ: Mapping[str, str] | None = None) -> Self:
        """This resource with its EnvVar fields read from ``environ`` (default os.environ).

        Raises:
            ResourceError: a variable is unset, or its value is invalid for the field.
        """
        if not self._env_fields:
            return self
        env = os.environ if environ is None else environ
        missing = sorted(name for name in self._env_fields.values() if name not in env)
        if missing:
            raise ResourceError(
                f"{type(self).__name__}: environment variable(s) {', '.join(missing)} not set "
                "in the run worker's environment"
            )
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update({field: env[var] for field, var in self._env_fields.items()})
        try:
            return type(self).model_validate(values)
        except ValidationError as err:
            raise ResourceError(
                f"{type(self).__name__}: invalid value from the environment: {err}"
            ) from err

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Never show a resolved secret: EnvVar fields print as the variable's name.
        for name, value in super().__repr_args__():
            if name in self._env_fields:
                yield name, EnvVar(self._env_fields[name])
            else:
                yield name, value


def is_resource_type(annotation: Any) -> bool:
    """Whether a parameter annotated ``annotation`` receives a resource."""
    return isinstance(annotation, type) and issubclass(annotation, ConfigurableResource)


class Resources:
    """The resources of one step, as attributes: ``context.resources.warehouse``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(
                f"no resource {name!r} (this step has: {', '.join(sorted(self._values)) or 'none'})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __repr__(self) -> str:
        return f"Resources({sorted(self._values)!r})"

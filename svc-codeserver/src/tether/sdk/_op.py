"""The ``@op`` decorator: a function becomes a reusable step with typed inputs and config."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from pydantic import BaseModel
from tether.sdk._errors import DefinitionError
from tether.sdk._resources import is_resource_type
from tether.sdk._retry import RetryPolicy

#: Names become NATS subject tokens (step keys), so they are restricted to this alphabet.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

#: Name of the single output every op has: its return value.
RESULT = "result"


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a valid op/job/node name, else raise DefinitionError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"invalid {what} name {name!r}: use letters, digits, '_' and '-' "
            "(starting with a letter or '_')"
        )
    return name


def type_name(annotation: Any) -> str:
    """A short readable name of a type annotation (``int``, ``list[str]``, ``Any``)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "Any"
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


@dataclass(frozen=True)
class OpInputDef:
    """One input of an op: a parameter other than ``context`` and ``config``."""

    name: str
    annotation: Any = Any
    has_default: bool = False

    @property
    def type_name(self) -> str:
        """Readable name of the input's type."""
        return type_name(self.annotation)


@dataclass(frozen=True)
class OpDefinition:
    """A decorated op function and what was learned from its signature.

    Calling it inside a ``@job`` body records a node and returns an output handle;
    calling it anywhere else runs the function directly (handy in unit tests).
    """

    fn: Callable[..., Any]
    name: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    inputs: tuple[OpInputDef, ...] = ()
    output_annotation: Any = Any
    config_model: type[BaseModel] | None = None
    wants_context: bool = False
    retry_policy: RetryPolicy | None = None
    required_resource_keys: frozenset[str] = frozenset()
    resource_params: tuple[str, ...] = ()

    @property
    def resource_keys(self) -> frozenset[str]:
        """Every resource it needs: its resource parameters and ``required_resource_keys``."""
        return self.required_resource_keys | set(self.resource_params)

    @property
    def output_type_name(self) -> str:
        """Readable name of the op's output type."""
        return type_name(self.output_annotation)

    @property
    def is_async(self) -> bool:
        """Whether the op function is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn)

    def config_schema(self) -> dict[str, Any] | None:
        """JSON Schema of the op's config (pydantic ``model_json_schema``), or None."""
        if self.config_model is None:
            return None
        return self.config_model.model_json_schema()

    def config_required(self) -> bool:
        """Whether run config must supply this op's config (the model has required fields)."""
        if self.config_model is None:
            return False
        return any(f.is_required() for f in self.config_model.model_fields.values())

    def alias(self, name: str) -> _AliasedOp:
        """Use this op under node name ``name`` in a job body: ``my_op.alias("x")(...)``."""
        return _AliasedOp(self, check_name(name, "node"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tether.sdk._job import current_composition

        composition = current_composition()
        if composition is None:
            return self.fn(*args, **kwargs)
        return composition.add_node(self, None, args, kwargs)


@dataclass(frozen=True)
class _AliasedOp:
    """An op bound to an explicit node name, for use inside a job body."""

    op: OpDefinition
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tether.sdk._job import current_composition

        composition = current_composition()
        if composition is None:
            raise DefinitionError(f"{self.op.name}.alias({self.name!r}) is only usable in a @job")
        return composition.add_node(self.op, self.name, args, kwargs)


def _build_op(
    fn: Callable[..., Any],
    name: str | None,
    description: str | None,
    tags: Mapping[str, str] | None,
    retry_policy: RetryPolicy | None = None,
    required_resource_keys: Iterable[str] | None = None,
) -> OpDefinition:
    if not callable(fn):
        raise DefinitionError(f"@op needs a function, got {fn!r}")
    op_name = check_name(name or fn.__name__, "op")
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise DefinitionError(f"op {op_name!r}: retry_policy must be a RetryPolicy")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: fall back to raw annotations
        hints = dict(getattr(fn, "__annotations__", {}))
    params = list(inspect.signature(fn).parameters.values())
    wants_context = bool(params) and params[0].name == "context"
    if wants_context:
        params = params[1:]
    config_model: type[BaseModel] | None = None
    inputs: list[OpInputDef] = []
    resource_params: list[str] = []
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise DefinitionError(f"op {op_name!r}: *args/**kwargs parameters are not supported")
        if p.name == "context":
            raise DefinitionError(f"op {op_name!r}: 'context' must be the first parameter")
        annotation = hints.get(p.name, Any)
        if p.name == "config":
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise DefinitionError(
                    f"op {op_name!r}: parameter 'config' must be typed with a pydantic BaseModel"
                )
            config_model = annotation
            continue
        if is_resource_type(annotation):
            # Not an input: the run gives it the resource of the parameter's name.
            resource_params.append(p.name)
            continue
        inputs.append(
            OpInputDef(p.name, annotation, has_default=p.default is not inspect.Parameter.empty)
        )
    return OpDefinition(
        fn=fn,
        name=op_name,
        description=description if description is not None else inspect.getdoc(fn) or "",
        tags={str(k): str(v) for k, v in (tags or {}).items()},
        inputs=tuple(inputs),
        output_annotation=hints.get("return", Any),
        config_model=config_model,
        wants_context=wants_context,
        retry_policy=retry_policy,
        required_resource_keys=_resource_keys(required_resource_keys, op_name),
        resource_params=tuple(resource_params),
    )


def _resource_keys(required: Iterable[str] | None, op_name: str) -> frozenset[str]:
    if isinstance(required, str) or not isinstance(required, Iterable | None):
        raise DefinitionError(f"op {op_name!r}: required_resource_keys must be a list of names")
    return frozenset(check_name(r, f"op {op_name!r} resource") for r in required or ())


@overload
def op(fn: Callable[..., Any], /) -> OpDefinition: ...


@overload
def op(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    retry_policy: RetryPolicy | None = None,
    required_resource_keys: Iterable[str] | None = None,
) -> Callable[[Callable[..., Any]], OpDefinition]: ...


def op(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    retry_policy: RetryPolicy | None = None,
    required_resource_keys: Iterable[str] | None = None,
) -> OpDefinition | Callable[[Callable[..., Any]], OpDefinition]:
    """Declare an op (a step of a job), bare (``@op``) or with options (``@op(name=...)``).

    The function's parameters are its inputs, except an optional first ``context``
    parameter (it receives an :class:`~tether.sdk.OpContext`) and an optional ``config``
    parameter typed with a pydantic model (the op's config schema). The return value is
    the op's single output, ``result``. A parameter typed with a
    :class:`~tether.sdk.ConfigurableResource` subclass is not an input: it receives the
    resource of its name from ``Definitions(resources=...)`` (``def load(db: Warehouse)``).

    Args:
        fn: the function (when used bare).
        name: op name; defaults to the function name.
        description: defaults to the function's docstring.
        tags: string key/value tags.
        retry_policy: how to retry the op when it raises (the job's ``op_retry_policy``
            applies when unset).
        required_resource_keys: resources it uses through ``context.resources``.
    """
    if fn is not None:
        return _build_op(fn, name, description, tags, retry_policy, required_resource_keys)

    def decorate(f: Callable[..., Any]) -> OpDefinition:
        return _build_op(f, name, description, tags, retry_policy, required_resource_keys)

    return decorate

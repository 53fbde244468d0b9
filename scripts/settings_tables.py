"""Render the settings tables of the READMEs from the pydantic-settings models.

A README section between the markers::

    <!-- settings:tether.poller.settings.PollerSettings -->
    ...generated...
    <!-- /settings -->

gets a table of that model's own fields (fields inherited from another settings class are
that class's table): environment variable, type, default and meaning (the field's
``description``). A field whose type is itself a settings class (the launcher's ``ecs``)
is expanded into that class's fields, under its own prefix. A default that depends on the
machine (a CPU count, an interpreter path) is said in the description as a last sentence
``Default: ...``; the table shows that sentence instead of the value.

Usage (from the repository root)::

    uv run python scripts/settings_tables.py          # rewrite the READMEs
    uv run python scripts/settings_tables.py --check  # exit 1 naming the stale ones
"""

from __future__ import annotations

import argparse
import enum
import importlib
import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, NoDecode
from tether.shared.runtime.settings import comma_or_json_list

REPO = Path(__file__).resolve().parents[1]
SECTION = re.compile(
    r"(?P<open><!-- settings:(?P<target>[\w.]+) -->\n)(?P<body>.*?)(?P<close><!-- /settings -->)",
    re.DOTALL,
)
DEFAULT_SENTENCE = re.compile(r"(?:^|\s+)Default: (?P<default>.+?)\.?$")


def readmes(root: Path = REPO) -> list[Path]:
    """The READMEs that may hold settings sections: the root's, and those one or two folders
    down (``svc-launcher/README.md``, ``deploy/ecs/README.md``), hidden folders aside."""
    found = [root / "README.md", *root.glob("*/README.md"), *root.glob("*/*/README.md")]
    return sorted(p for p in found if not p.relative_to(root).parts[0].startswith("."))


def settings_modules(root: Path = REPO) -> list[str]:
    """The product's settings modules (``settings.py`` under a distribution's ``src/``)."""
    return sorted(
        ".".join(path.relative_to(src).with_suffix("").parts)
        for src in root.glob("*/src")
        for path in src.glob("tether/**/settings.py")
    )


class SettingsDocError(Exception):
    """A model cannot be documented (a field without a description, an unknown target)."""


def load_model(target: str) -> type[BaseSettings]:
    """The settings class a marker names (``package.module.Class``)."""
    module_name, _, class_name = target.rpartition(".")
    try:
        model = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise SettingsDocError(f"settings:{target}: {err}") from err
    if not (isinstance(model, type) and issubclass(model, BaseSettings)):
        raise SettingsDocError(f"settings:{target} is not a pydantic-settings class")
    return model


def own_fields(model: type[BaseSettings]) -> Iterator[tuple[str, FieldInfo]]:
    """The fields ``model`` declares, not those of a settings class it extends."""
    inherited: set[str] = set()
    for base in model.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, BaseSettings) and base is not BaseSettings:
            inherited.update(base.model_fields)
    for name, field in model.model_fields.items():
        if name not in inherited:
            yield name, field


def env_name(model: type[BaseSettings], name: str, field: FieldInfo) -> str:
    """The environment variable pydantic-settings reads ``name`` from."""
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    if alias:
        return alias.upper()
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(annotation, False)`` otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            inner = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return inner, True
    return annotation, False


def _split_by(model: type[BaseSettings], name: str) -> str:
    """How a ``NoDecode`` list field's own validator reads the environment's text."""
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if name in decorator.info.fields:
            func = getattr(decorator.func, "__func__", decorator.func)
            return "comma-separated or JSON" if func is comma_or_json_list else "comma-separated"
    return "text"


def type_text(annotation: Any, field: FieldInfo, split: str = "JSON") -> str:
    """How the environment spells a value of ``annotation`` (``split``: how a list is)."""
    annotation, _ = _optional(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        return f"list ({split})"
    if origin is dict:
        return "object (JSON)"
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a, field, split) for a in get_args(annotation))
    if isinstance(annotation, type):
        if issubclass(annotation, SecretStr):
            return "secret"
        if issubclass(annotation, bool):
            return "bool"
        if issubclass(annotation, enum.Enum):
            return " | ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, BaseModel):
            return f"object (JSON, `{annotation.__name__}`)"
        if issubclass(annotation, Path):
            return "path"
        return annotation.__name__
    return str(annotation)


def bounds_text(field: FieldInfo) -> str:
    """The field's numeric bounds (``ge=1, le=65535`` -> ``≥ 1, ≤ 65535``), or empty."""
    bounds = []
    for m in field.metadata:
        if isinstance(m, annotated_types.Gt):
            bounds.append(f"> {m.gt:g}")
        elif isinstance(m, annotated_types.Ge):
            bounds.append(f"≥ {m.ge:g}")
        elif isinstance(m, annotated_types.Lt):
            bounds.append(f"< {m.lt:g}")
        elif isinstance(m, annotated_types.Le):
            bounds.append(f"≤ {m.le:g}")
    return ", ".join(bounds)


def size_text(value: int) -> str:
    """``8 MiB`` for a byte count that is a whole number of KiB, MiB or GiB, else empty."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return ""


def value_text(value: Any) -> str:
    """A default as one would write it in the environment."""
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "unset" if not value.get_secret_value() else "(secret)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int | str | Path):
        return f"`{value}`" if str(value) != "" else "empty"
    if isinstance(value, BaseModel):
        return "defaults"
    if isinstance(value, list | tuple | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value!r}`"


def default_text(name: str, field: FieldInfo, description: str) -> tuple[str, str]:
    """``(default, description)``: the description's ``Default: ...`` sentence, or the value
    (of a ``*_bytes`` field also in KiB, MiB or GiB)."""
    stated = DEFAULT_SENTENCE.search(description)
    if stated:
        return stated["default"], description[: stated.start()].rstrip()
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required", description
    value = field.get_default(call_default_factory=True, validated_data={})
    text = value_text(value)
    if "bytes" in name and isinstance(value, int) and (size := size_text(value)):
        text = f"{text} ({size})"
    return text, description


def cell(text: str) -> str:
    """Table-safe markdown: one line, pipes escaped; outside code spans ``<`` and ``*`` are
    literal (``<token>`` is no HTML tag, ``OTEL_*`` no emphasis)."""
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", parts[i]).replace("*", "\\*")
    return "`".join(parts).replace("|", "\\|")


def nested_settings(field: FieldInfo) -> type[BaseSettings] | None:
    """The settings class a field holds (read under its own prefix), or None."""
    nested, _ = _optional(field.annotation)
    if isinstance(nested, type) and issubclass(nested, BaseSettings):
        return nested
    return None


def rows(model: type[BaseSettings], target: str) -> Iterator[str]:
    """One table row per environment variable of ``model``."""
    for name, field in own_fields(model):
        if nested := nested_settings(field):
            yield from rows(nested, target)
            continue
        if not field.description:
            raise SettingsDocError(f"{target}: field {name!r} has no description")
        default, description = default_text(name, field, field.description)
        no_decode = any(isinstance(m, NoDecode) or m is NoDecode for m in field.metadata)
        kind = type_text(field.annotation, field, _split_by(model, name) if no_decode else "JSON")
        if bounds := bounds_text(field):
            kind = f"{kind}, {bounds}"
        yield (
            f"| `{env_name(model, name, field)}` | {cell(kind)} "
            f"| {cell(default)} | {cell(description)} |"
        )


def render(target: str) -> str:
    """The generated body of a ``settings:<target>`` section."""
    model = load_model(target)
    lines = [
        "<!-- generated by scripts/settings_tables.py: edit the model's field descriptions -->",
        "",
        "| variable | type | default | meaning |",
        "| --- | --- | --- | --- |",
        *rows(model, target),
        "",
    ]
    return "\n".join(lines) + "\n"


def rewrite(text: str) -> str:
    """``text`` with every settings section generated afresh."""
    return SECTION.sub(lambda m: m["open"] + render(m["target"]) + m["close"], text)


def stale(root: Path = REPO) -> list[str]:
    """The READMEs (paths relative to ``root``) whose settings sections are out of date."""
    out = []
    for path in readmes(root):
        text = path.read_text()
        if rewrite(text) != text:
            out.append(str(path.relative_to(root)))
    return out


def documented(root: Path = REPO) -> set[str]:
    """The settings classes (``module.Class``) some README section shows, nested ones too."""
    shown: set[str] = set()
    todo = [m["target"] for p in readmes(root) for m in SECTION.finditer(p.read_text())]
    while todo:
        target = todo.pop()
        shown.add(target)
        model = load_model(target)
        for _, field in own_fields(model):
            if nested := nested_settings(field):
                todo.append(f"{nested.__module__}.{nested.__qualname__}")
    return shown


def main(argv: list[str] | None = None) -> int:
    """Rewrite the READMEs' settings sections, or (``--check``) report the stale ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        for name in out:
            print(f"{name}: settings table out of date (run scripts/settings_tables.py)")
        return 1 if out else 0
    for path in readmes():
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            path.write_text(new)
            print(f"rewrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

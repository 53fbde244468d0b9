"""The READMEs' settings tables are the ones scripts/settings_tables.py renders from the
pydantic-settings models: a model change without a regenerated README fails here."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Literal

import pytest
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from tether.shared.runtime.settings import comma_or_json_list

REPO = Path(__file__).resolve().parents[1]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "settings_tables", REPO / "scripts" / "settings_tables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tables = _load_script()


def test_readmes_are_generated_from_the_models() -> None:
    assert tables.stale() == [], "run `uv run python scripts/settings_tables.py`"
    assert tables.main(["--check"]) == 0


def test_every_settings_class_has_a_table() -> None:
    defined = set()
    for module_name in tables.settings_modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.__module__ == module_name
            ):
                defined.add(f"{module_name}.{name}")
    assert "tether.launcher.ecs.settings.EcsSettings" in defined
    assert defined - tables.documented() == set()


class _Nested(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_NESTED_")

    depth: int = Field(default=2, ge=1, le=9, description="How deep.")


class _Demo(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")

    mode: Literal["a", "b"] = Field(default="a", description="Which mode.")
    token: SecretStr | None = Field(default=None, description="A <secret> token.")
    names: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Names.")
    chunk_bytes: int = Field(default=64 * 1024, gt=0, description="Chunk size.")
    workers: int = Field(default=3, description="Workers. Default: one per CPU.")
    nested: _Nested = Field(default_factory=_Nested, description="Nested settings.")

    _split = field_validator("names", mode="before")(comma_or_json_list)


def test_rows_name_env_var_type_default_and_meaning() -> None:
    body = tables.render(f"{__name__}._Demo")
    assert body.splitlines()[2:] == [
        "| variable | type | default | meaning |",
        "| --- | --- | --- | --- |",
        "| `DEMO_MODE` | `a` \\| `b` | `a` | Which mode. |",
        "| `DEMO_TOKEN` | secret | unset | A &lt;secret> token. |",
        "| `DEMO_NAMES` | list (comma-separated or JSON) | `[]` | Names. |",
        "| `DEMO_CHUNK_BYTES` | int, > 0 | `65536` (64 KiB) | Chunk size. |",
        "| `DEMO_WORKERS` | int | one per CPU | Workers. |",
        "| `DEMO_NESTED_DEPTH` | int, ≥ 1, ≤ 9 | `2` | How deep. |",
        "",
    ]


class _Undocumented(BaseSettings):
    size: int = 1


def test_a_field_without_description_is_refused() -> None:
    with pytest.raises(tables.SettingsDocError, match="'size' has no description"):
        tables.render(f"{__name__}._Undocumented")


def test_rewrite_replaces_only_the_marked_section() -> None:
    text = ("intro\n<!-- settings:tests_demo -->\nold table\n<!-- /settings -->\noutro\n").replace(
        "tests_demo", f"{__name__}._Nested"
    )
    new = tables.rewrite(text)
    assert new.startswith("intro\n<!-- settings:") and new.endswith("<!-- /settings -->\noutro\n")
    assert "old table" not in new and "`DEMO_NESTED_DEPTH`" in new
    assert tables.rewrite(new) == new

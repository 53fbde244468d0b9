"""Every substrate implements the whole seam: code-server host, run-worker host, aclose."""

from __future__ import annotations

import importlib
import inspect

import pytest
from tether.launcher.substrate import (
    AdoptingSubstrate,
    BoundedStarts,
    CodeServerHost,
    RunWorkerHost,
    Substrate,
)

SUBSTRATES = {
    "process": ("tether.launcher.process", "ProcessSubstrate"),
    "docker": ("tether.launcher.docker", "DockerSubstrate"),
    "k8s": ("tether.launcher.k8s", "KubernetesSubstrate"),
    "ecs": ("tether.launcher.ecs", "EcsSubstrate"),
}


def _members(*protocols: type) -> set[str]:
    names: set[str] = set()
    for protocol in protocols:
        for cls in protocol.__mro__:
            if cls.__module__ != "tether.launcher.substrate":
                continue
            names |= set(getattr(cls, "__annotations__", {}))
            names |= {n for n, v in vars(cls).items() if inspect.isfunction(v) and n[0] != "_"}
    return names


def _substrate_class(name: str) -> type:
    module, attr = SUBSTRATES[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as err:
        pytest.skip(f"the {name} extra is not installed: {err}")


@pytest.mark.parametrize("name", sorted(SUBSTRATES))
def test_each_substrate_has_every_member_of_the_protocol(name: str) -> None:
    cls = _substrate_class(name)
    missing = _members(Substrate, CodeServerHost, RunWorkerHost) - set(dir(cls))
    assert not missing, f"{cls.__name__} lacks {sorted(missing)}"
    assert cls.name == name


def test_optional_capabilities_are_where_they_are_implemented() -> None:
    process = _substrate_class("process")
    assert not _members(AdoptingSubstrate) - set(dir(process))
    assert not _members(BoundedStarts) - set(dir(process))
    for name in ("docker", "k8s", "ecs"):
        cls = _substrate_class(name)
        assert "adopt_code_server" not in dir(cls) and "use_start_signal" not in dir(cls)

"""Fixtures shared by every test directory (real servers on free loopback ports) and the
``unit`` / ``integration`` split.

A test is ``integration`` when it is marked so (a module's ``pytestmark``, a decorator, or a
``pytest.param(..., marks=...)``); every other test is marked ``unit`` here, at collection.
``unit`` is enforced, not trusted: while a unit test sets up and runs, starting a process or
opening a socket (TCP, or a Unix socket such as Docker's) fails it, naming what it did, so a
test that needs a real part cannot land in the fast suite (``pytest -m unit``) unnoticed.
"""

from __future__ import annotations

import _posixsubprocess
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

# croniter calls platform.architecture() when imported, which runs `file` on the
# interpreter (a process start): imported here, before any guard, so the first unit test
# that parses a cron string does not fail the guard below depending on test order.
import croniter  # noqa: F401
import pytest
from tether.testing import NatsServer, start_nats

#: Fixtures that start a real part: a test that uses one (directly or through another
#: fixture) is ``integration``. ``database_url``: a control plane on a real database
#: (svc-controlplane/tests/conftest.py; ``api`` and ``settings`` build on it).
REAL_PART_FIXTURES = frozenset({"nats_server", "database_url"})

_REAL_PART_USES = pytest.StashKey[list[str]]()
_WATCHED_FAMILIES = {socket.AF_INET, socket.AF_INET6, socket.AF_UNIX}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh NATS server with JetStream and JWT auth (this session's operator and
    account) on a free port, with a temp store dir; clients need credentials
    (``nats_server.creds``, ``.credentials_for(role)``, ``.connect()``)."""
    server = start_nats(tmp_path)
    yield server
    server.stop()


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``integration`` every test that uses a real-part fixture, ``unit`` every other
    test not marked ``integration``."""
    for item in items:
        if REAL_PART_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)


@contextmanager
def _refusing_real_parts(uses: list[str]) -> Iterator[None]:
    """Refuse (and record in ``uses``) process starts and socket connects/binds made by
    this thread or threads started meanwhile (not by servers other tests left running)."""
    before = {t.ident for t in threading.enumerate()} - {threading.get_ident()}

    def refuse(what: str) -> None:
        if threading.get_ident() in before:
            return
        uses.append(what)
        raise PermissionError(f"a unit test may not {what}: mark the test integration")

    def guarded(owner: Any, name: str, describe: Callable[..., str | None]) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            what = describe(*args)
            if what is not None:
                refuse(what)
            return original(*args, **kwargs)

        stack.callback(setattr, owner, name, original)
        setattr(owner, name, wrapper)

    def on_socket(verb: str) -> Callable[..., str | None]:
        def describe(sock: socket.socket, address: Any = None, *_: Any) -> str | None:
            if sock.family not in _WATCHED_FAMILIES:
                return None
            return f"{verb} a socket ({address!r})"

        return describe

    def start(*args: Any) -> str:
        return "start a process"

    with ExitStack() as stack:
        for verb in ("connect", "connect_ex", "bind"):
            guarded(socket.socket, verb, on_socket(verb))
        guarded(subprocess.Popen, "_execute_child", start)
        guarded(_posixsubprocess, "fork_exec", start)  # multiprocessing's spawn
        guarded(os, "fork", start)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    """Set a unit test's fixtures up under the guard."""
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Run a unit test under the guard."""
    return (yield from _guarded(item))


def _guarded(item: pytest.Item) -> Generator[None, Any, Any]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    uses = item.stash.setdefault(_REAL_PART_USES, [])
    with _refusing_real_parts(uses):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fail a unit test that tried a real part, even if the code under test swallowed the
    refusal (or skipped for want of the part)."""
    report = yield
    uses = item.stash.get(_REAL_PART_USES, [])
    if uses and call.when in ("setup", "call") and report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = (
            f"unit test used real parts ({'; '.join(dict.fromkeys(uses))}): "
            "mark it (or its module) integration"
        )
    return report

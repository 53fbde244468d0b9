"""The launcher's handlers come from the work specs: one per kind given to launchers."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from launcher_testkit import launcher_settings
from tether.launcher.handlers import WorkHandlers
from tether.shared.wire import workspecs
from tether.shared.wire.work import WorkKind
from tether.shared.wire.workspecs import IncompleteHandlersError, ServedBy, kinds_served_by


def _handlers(nats_url: str) -> WorkHandlers:
    # Building the registry needs none of the collaborators the handlers call later.
    return WorkHandlers(launcher_settings(nats_url), None, None, None, None)  # type: ignore[arg-type]


def test_the_launcher_handles_every_kind_the_specs_give_launchers(nats_server) -> None:
    served = _handlers(nats_server.url).served_kinds
    assert served == kinds_served_by(ServedBy.LAUNCHER)
    assert WorkKind.PRESIGN_COMPUTE_LOGS not in served


def test_a_kind_given_to_launchers_without_a_handler_stops_the_launcher(
    nats_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = dict(workspecs.WORK_SPECS)
    ping = specs[WorkKind.PING_LOCATION]
    specs[WorkKind.PING_LOCATION] = dataclasses.replace(ping, served_by=ServedBy.LAUNCHER)
    monkeypatch.setattr(workspecs, "WORK_SPECS", MappingProxyType(specs))
    with pytest.raises(IncompleteHandlersError, match="missing ping_location"):
        _handlers(nats_server.url)

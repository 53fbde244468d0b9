"""Loading locations (module, file, attribute, failures) and the snapshot's proto round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from tether.codeserver.loader import AmbiguousRepository, RepositoryNotFound, load_location
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.grpc.convert import (
    error_from_proto,
    error_to_proto,
    snapshot_from_proto,
    snapshot_to_proto,
)
from tether.shared.wire.locations import LocationConfig


def test_loads_module_and_finds_the_single_definitions(examples_location) -> None:
    loaded = load_location(examples_location)
    assert loaded.error is None and loaded.loaded
    snap = loaded.snapshot()
    assert snap.location_name == "examples"
    [repo] = snap.repositories
    assert repo.name == "examples"
    assert [j.name for j in repo.jobs] == [
        "hello",
        "fails",
        "configured",
        "fan_out_fan_in",
        "fan_out_parallel",
        "flaky",
        "countdown",
        "daily_report",
        "regional_sync",
        "__asset_job",
    ]
    fan = snap.find_job("fan_out_fan_in")
    assert fan is not None
    assert [o.name for o in fan.ops] == [
        "numbers",
        "total",
        "largest",
        "count",
        "total_2",
        "report",
    ]
    assert {(e.from_op, e.to_op, e.to_input) for e in fan.edges} >= {
        ("numbers", "total_2", "values"),
        ("total_2", "report", "stats"),
    }
    configured = snap.find_job("configured")
    assert configured is not None
    assert configured.config_schema["properties"]["ops"]["required"] == ["configured_greeting"]
    assert configured.ops[0].config_schema["required"] == ["name"]


def test_snapshot_round_trips_through_proto(examples_location) -> None:
    snap = load_location(examples_location).snapshot()
    wire = snapshot_to_proto(snap).SerializeToString()
    back = snapshot_from_proto(pb.LocationSnapshot.FromString(wire))
    assert back == snap
    hello = back.find_job("hello")
    assert hello is not None and hello.ops[0].config_schema is None


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_python_file_and_attribute(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "two_defs.py",
        "from tether.sdk import Definitions, job, op\n"
        "@op\ndef a() -> int:\n    return 1\n"
        "@job\ndef j():\n    a()\n"
        "first = Definitions(jobs=[j], name='first')\n"
        "second = Definitions(jobs=[], name='second')\n",
    )
    ambiguous = load_location(LocationConfig(name="x", python_file=str(path)))
    assert ambiguous.error is not None and "several Definitions" in ambiguous.error.message
    chosen = load_location(LocationConfig(name="x", python_file=str(path), attribute="second"))
    assert chosen.definitions is not None and chosen.definitions.name == "second"
    missing = load_location(LocationConfig(name="x", python_file=str(path), attribute="third"))
    assert missing.error is not None and "no attribute 'third'" in missing.error.message


MULTI_REPO = """
from tether.sdk import Definitions, job, op, sensor


@op
def step() -> None: ...


@job
def load():
    step()


@job
def report():
    step()


@sensor(job=report)
def poke():
    return None


analytics = Definitions(jobs=[load], name="analytics")
ops = Definitions(jobs=[report], sensors=[poke], name="ops")
repositories = [analytics, ops]
"""


def test_a_list_of_definitions_is_several_repositories(tmp_path: Path) -> None:
    path = _write(tmp_path, "multi.py", MULTI_REPO)
    loaded = load_location(LocationConfig(name="multi", python_file=str(path)))
    assert loaded.error is None
    assert [d.name for d in loaded.repositories] == ["analytics", "ops"]
    assert [r.name for r in loaded.snapshot().repositories] == ["analytics", "ops"]
    assert loaded.repository("ops").name == "ops"
    assert loaded.repository(None, job_name="report").name == "ops"
    with pytest.raises(RepositoryNotFound, match="Repository 'x' not found"):
        loaded.repository("x")
    with pytest.raises(RepositoryNotFound, match="job 'nope' not found in code location"):
        loaded.repository(None, job_name="nope")
    with pytest.raises(AmbiguousRepository, match="several repositories"):
        loaded.repository(None)
    clash = _write(tmp_path, "clash.py", MULTI_REPO.replace('name="ops"', 'name="analytics"'))
    error = load_location(LocationConfig(name="c", python_file=str(clash))).error
    assert error is not None and "several repositories named analytics" in error.message


@pytest.mark.parametrize(
    ("source", "cls_name", "message"),
    [
        ("import no_such_module_xyz\n", "ModuleNotFoundError", "no_such_module_xyz"),
        ("def broken(:\n", "SyntaxError", "invalid syntax"),
        ("x = 1\n", "tether.codeserver.loader.LocationLoadError", "no tether.sdk.Definitions"),
        ("import sys\nsys.exit(3)\n", "SystemExit", "3"),
    ],
)
def test_load_failures_become_error_info(tmp_path: Path, source, cls_name, message) -> None:
    path = _write(tmp_path, "bad_location.py", source)
    loaded = load_location(LocationConfig(name="bad", python_file=str(path)))
    assert not loaded.loaded and loaded.error is not None
    assert loaded.error.cls_name == cls_name
    assert message in loaded.error.message


def test_broken_example_error_has_traceback_and_survives_proto(broken_location) -> None:
    loaded = load_location(broken_location)
    assert loaded.error is not None
    assert loaded.error.cls_name == "RuntimeError"
    assert "broken_location.py" in loaded.error.traceback
    assert error_from_proto(error_to_proto(loaded.error)) == loaded.error


def test_location_without_code_is_an_error() -> None:
    loaded = load_location(LocationConfig(name="empty"))
    assert loaded.error is not None and "neither module nor python_file" in loaded.error.message

"""Re-execution from failure in the run worker: only selected steps run, parent outputs are reused.

Real worker subprocesses against real NATS, with both executors; outputs are stored under a
per-test storage directory (TETHER_RUN_WORKER_STORAGE_DIR).
"""

from __future__ import annotations

import pickle
import threading
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any

import pytest
from tether.codeserver.worker.outputs import (
    MissingParentOutput,
    OutputNotStored,
    StepOutputStorage,
)
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import LocationConfig

pytestmark = pytest.mark.integration

_HERE = Path(__file__).resolve().parent


def _load_helpers() -> Any:
    # The run worker test module holds the NATS/worker helpers (no shared conftest import).
    spec = spec_from_file_location("run_worker_helpers", _HERE / "test_run_worker.py")
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h = _load_helpers()
E = h.E

LOCATION = """
import os
import threading
from pathlib import Path
from tether.sdk import Definitions, job, op

STATE = Path(os.environ["REEXEC_STATE"])

@op
def first() -> int:
    # Counts its executions: a reused output must not run it again.
    counter = STATE / "first.count"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    return 20

@op
def second(value: int) -> int:
    if not (STATE / "fixed").exists():
        raise RuntimeError("not fixed yet")
    return value + 1

@op
def third(value: int) -> int:
    return value * 2

@op
def side(value: int) -> str:
    (STATE / "side.count").write_text("ran")
    return f"side {value}"

@job
def pipeline():
    value = first()
    third(second(value))
    side(value)

@op
def make_lock():
    return threading.Lock()

@op
def use_lock(lock) -> str:
    if not (STATE / "fixed").exists():
        raise RuntimeError("not fixed yet")
    return type(lock).__name__

@job
def locked():
    use_lock(make_lock())

defs = Definitions(jobs=[pipeline, locked])
"""

EXECUTORS = {"in_process": {"in_process": {}}, "multiprocess": {"multiprocess": {}}}


@pytest.fixture
def location(tmp_path: Path) -> LocationConfig:
    path = tmp_path / "reexec_location.py"
    path.write_text(LOCATION)
    return LocationConfig(name="reexec", python_file=str(path))


class _Runs:
    """Runs workers with this test's state and storage directories."""

    def __init__(self, nats_url: str, js: Any, location: LocationConfig, tmp: Path) -> None:
        self.nats_url, self.js, self.location = nats_url, js, location
        self.state = tmp / "state"
        self.state.mkdir()
        self.storage = tmp / "storage"

    async def run(self, job: str, executor: str, **run: Any) -> tuple[str, list[Any]]:
        args = h.run_args(
            self.location, self.nats_url, job, {"execution": EXECUTORS[executor]}, **run
        )
        code, stderr = await h.run_worker(
            args,
            REEXEC_STATE=str(self.state),
            TETHER_RUN_WORKER_STORAGE_DIR=str(self.storage),
        )
        assert code == 0, stderr
        events = await h.read_events(self.js, args.run.run_id)
        h.assert_numbered(events, args.run.run_id)
        return args.run.run_id, [e for _, e in events]

    def stored(self, run_id: str, step: str) -> Any:
        return StepOutputStorage(self.storage, run_id).read(step)

    def count(self) -> int:
        return int((self.state / "first.count").read_text())


@pytest.fixture
async def runs(nats_server, location: LocationConfig, tmp_path: Path) -> Any:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    yield _Runs(nats_server.url, js, location, tmp_path)
    await nc.close()


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
async def test_from_failure_runs_selected_steps_and_reuses_outputs(
    runs: _Runs, executor: str
) -> None:
    parent, events = await runs.run("pipeline", executor)
    assert events[-1].event_type is E.RUN_FAILURE
    assert {(e.event_type, e.step_key) for e in events} >= {
        (E.STEP_SUCCESS, "first"),
        (E.STEP_FAILURE, "second"),
        (E.STEP_SKIPPED, "third"),
        (E.STEP_SUCCESS, "side"),
    }
    # Every output is stored, whatever the executor, and outlives the run.
    assert runs.stored(parent, "first") == 20
    assert runs.stored(parent, "side") == "side 20"
    assert next(e for e in events if e.event_type is E.STEP_OUTPUT).data["stored"] is True
    assert runs.count() == 1

    (runs.state / "fixed").touch()
    child, events = await runs.run(
        "pipeline", executor, step_selection=["second", "third"], parent_run_id=parent
    )
    assert [(e.event_type, e.step_key) for e in events] == [
        (E.RUN_START, None),
        (E.STEP_START, "second"),
        (E.STEP_OUTPUT, "second"),
        (E.STEP_SUCCESS, "second"),
        (E.STEP_START, "third"),
        (E.STEP_OUTPUT, "third"),
        (E.STEP_SUCCESS, "third"),
        (E.RUN_SUCCESS, None),
    ]
    start = events[0].data
    assert start["step_selection"] == ["second", "third"]
    assert start["parent_run_id"] == parent
    assert sorted(start["reused_steps"]) == ["first", "side"]
    assert runs.count() == 1  # first's output was reused, not recomputed
    assert runs.stored(child, "third") == 42
    # The reused outputs now belong to the child too: a re-execution of the child needs
    # only the child's storage, however long the chain.
    assert runs.stored(child, "first") == 20

    grandchild, events = await runs.run(
        "pipeline", executor, step_selection=["third"], parent_run_id=child
    )
    assert events[-1].event_type is E.RUN_SUCCESS
    assert [e.step_key for e in events if e.step_key] == ["third"] * 3
    assert runs.stored(grandchild, "third") == 42
    assert sorted(events[0].data["reused_steps"]) == ["first", "second", "side"]
    assert runs.count() == 1


async def test_missing_parent_outputs_fail_the_run_naming_them(runs: _Runs) -> None:
    unknown_parent = new_id()
    run_id, events = await runs.run(
        "pipeline", "in_process", step_selection=["second", "third"], parent_run_id=unknown_parent
    )
    assert [e.event_type for e in events] == [E.RUN_FAILURE]
    failure = events[0]
    assert "output 'result' of step 'first'" in failure.message
    assert unknown_parent in failure.message
    assert failure.data["missing_outputs"] == [{"step_key": "first", "output": "result"}]

    _, events = await runs.run(
        "pipeline", "in_process", step_selection=["third"], parent_run_id="../outside"
    )
    assert [e.event_type for e in events] == [E.RUN_FAILURE]
    assert "'../outside' is not a run id" in events[0].message

    _, events = await runs.run("pipeline", "in_process", step_selection=["second", "nope"])
    assert [e.event_type for e in events] == [E.RUN_FAILURE]
    assert "does not have: nope" in events[0].message

    # A selection that reads nothing from unselected steps needs no parent.
    _, events = await runs.run("pipeline", "in_process", step_selection=["first"])
    assert [(e.event_type, e.step_key) for e in events][-1] == (E.RUN_SUCCESS, None)
    assert {e.step_key for e in events if e.step_key} == {"first"}


async def test_unpicklable_output_warns_in_process_and_fails_its_reexecution(
    runs: _Runs,
) -> None:
    parent, events = await runs.run("locked", "in_process")
    # In process, the run itself still has the value in memory.
    warning = next(e for e in events if e.event_type is E.LOG and e.step_key == "make_lock")
    assert warning.data["level"] == "WARNING"
    assert "cannot pickle" in warning.message
    output = next(e for e in events if e.event_type is E.STEP_OUTPUT)
    assert output.data["stored"] is False
    assert (events[-1].event_type, events[-1].step_key) == (E.RUN_FAILURE, None)

    (runs.state / "fixed").touch()
    _, events = await runs.run(
        "locked", "in_process", step_selection=["use_lock"], parent_run_id=parent
    )
    assert [e.event_type for e in events] == [E.RUN_FAILURE]
    assert "output 'result' of step 'make_lock'" in events[0].message
    assert "could not be stored" in events[0].message and "cannot pickle" in events[0].message

    # Step processes need the pickle: there the step fails, saying so.
    _, events = await runs.run("locked", "multiprocess")
    failure = next(e for e in events if e.event_type is E.STEP_FAILURE)
    assert failure.step_key == "make_lock"
    assert failure.error is not None and failure.error.cls_name.endswith("OutputNotStored")
    assert "must be picklable" in failure.error.message


def test_storage_writes_atomically_and_links_reused_outputs(tmp_path: Path) -> None:
    parent = StepOutputStorage(tmp_path / "relative" / ".." / "base", "run1")
    path = parent.write("a", {"x": 1})
    assert path == tmp_path / "base" / "run1" / "a" / "result.pickle"
    assert pickle.loads(path.read_bytes()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["result.pickle"]  # no partial left
    with pytest.raises(OutputNotStored, match="cannot pickle"):
        parent.write("b", threading.Lock())
    assert not parent.has("b")

    child = StepOutputStorage(tmp_path / "base", "run2")
    assert child.reuse("run1", "a").samefile(path)
    assert child.read("a") == {"x": 1}
    with pytest.raises(MissingParentOutput, match="could not be stored") as err:
        child.reuse("run1", "b")
    assert (err.value.step_key, err.value.output) == ("b", "result")
    with pytest.raises(MissingParentOutput, match="no file"):
        child.reuse("run0", "a")

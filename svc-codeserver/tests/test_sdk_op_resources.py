"""Ops take resources like assets do: a parameter typed with a ConfigurableResource gets the
resource of its name from ``Definitions(resources=...)``, ``required_resource_keys`` puts
others on ``context.resources``; Definitions refuses a job whose ops need a resource it
does not provide; and the real run worker gives them (EnvVars read in its environment),
in both executors."""

from __future__ import annotations

from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any

import pytest
from tether.sdk import (
    ConfigurableResource,
    DefinitionError,
    Definitions,
    OpContext,
    job,
    op,
)
from tether.shared.wire.locations import LocationConfig

_HERE = Path(__file__).resolve().parent


class Warehouse(ConfigurableResource):
    dsn: str


class Clock(ConfigurableResource):
    zone: str = "UTC"


@op
def load(context: OpContext, rows: int, db: Warehouse) -> str:
    return f"{rows}@{db.dsn}"


@op(required_resource_keys=["clock"])
def stamp(context: OpContext, value: str) -> str:
    return f"{value}/{context.resources.clock.zone}"


@op
def extract() -> int:
    return 3


@job
def etl() -> None:
    stamp(load(extract()))


def test_resource_parameters_are_not_inputs_and_keys_are_recorded() -> None:
    assert [i.name for i in load.inputs] == ["rows"]
    assert load.resource_params == ("db",)
    assert load.required_resource_keys == frozenset()
    assert stamp.required_resource_keys == frozenset({"clock"})
    assert stamp.resource_keys == frozenset({"clock"})
    # Called directly (a unit test of the op), it is the plain function.
    assert load(None, 2, Warehouse(dsn="x")) == "2@x"


def test_definitions_give_a_job_the_resources_its_ops_use() -> None:
    defs = Definitions(
        jobs=[etl], resources={"db": Warehouse(dsn="pg://w"), "clock": Clock(zone="CET")}
    )
    bound = defs.jobs["etl"]
    assert bound.resources["db"] == Warehouse(dsn="pg://w")
    assert bound.resources["clock"] == Clock(zone="CET")
    # A job whose ops need no resource is left as it was.

    @job
    def plain() -> None:
        extract()

    assert Definitions(jobs=[plain]).jobs["plain"] is plain


def test_a_job_missing_a_resource_is_refused_naming_it() -> None:
    with pytest.raises(DefinitionError, match=r"op 'stamp' of job 'etl' needs resource\(s\) clock"):
        Definitions(jobs=[etl], resources={"db": Warehouse(dsn="pg://w")})
    with pytest.raises(DefinitionError, match="needs resource"):
        Definitions(jobs=[etl])


def test_required_resource_keys_are_checked() -> None:
    with pytest.raises(DefinitionError, match="list of names"):
        op(name="a", required_resource_keys="clock")(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(DefinitionError, match="invalid op 'b' resource name"):
        op(name="b", required_resource_keys=["no good"])(lambda: None)


LOCATION = """
from tether.sdk import ConfigurableResource, Definitions, EnvVar, OpContext, job, op

class Warehouse(ConfigurableResource):
    dsn: str

class Clock(ConfigurableResource):
    zone: str = "UTC"

@op
def extract() -> int:
    return 3

@op
def load(rows: int, db: Warehouse) -> str:
    return f"{rows}@{db.dsn}"

@op(required_resource_keys=["clock"])
def stamp(context: OpContext, value: str) -> str:
    return f"{value}/{context.resources.clock.zone}"

@job
def etl():
    stamp(load(extract()))

@job(executor="multiprocess")
def etl_mp():
    stamp(load(extract()))

defs = Definitions(
    jobs=[etl, etl_mp],
    resources={"db": Warehouse(dsn=EnvVar("WAREHOUSE_DSN")), "clock": Clock(zone="CET")},
)
"""


def _load_helpers() -> Any:
    spec = spec_from_file_location("run_worker_helpers", _HERE / "test_run_worker.py")
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.parametrize("job_name", ["etl", "etl_mp"])
async def test_the_run_worker_gives_ops_their_resources(
    nats_server, tmp_path: Path, job_name: str
) -> None:
    h = _load_helpers()
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "ops.py").write_text(LOCATION)
    location = LocationConfig(name="ops", python_file=str(tmp_path / "ops.py"))
    args = h.run_args(location, nats_server.url, job_name)
    code, stderr = await h.run_worker(
        args,
        TETHER_RUN_WORKER_STORAGE_DIR=str(tmp_path / "storage"),
        WAREHOUSE_DSN="pg://warehouse",
    )
    assert code == 0, stderr
    events = [e for _, e in await h.read_events(js, args.run.run_id)]
    outputs = {e.step_key: e.data["value_repr"] for e in events if e.event_type is h.E.STEP_OUTPUT}
    assert outputs == {
        "extract": "3",
        "load": "'3@pg://warehouse'",
        "stamp": "'3@pg://warehouse/CET'",
    }
    assert events[-1].event_type is h.E.RUN_SUCCESS

    # Without the variable the step using the resource fails, saying which one.
    args = h.run_args(location, nats_server.url, job_name)
    code, _ = await h.run_worker(args, TETHER_RUN_WORKER_STORAGE_DIR=str(tmp_path / "storage"))
    events = [e for _, e in await h.read_events(js, args.run.run_id)]
    (failed,) = [e for e in events if e.event_type is h.E.STEP_FAILURE]
    assert failed.step_key == "load"
    assert failed.error is not None and "WAREHOUSE_DSN" in failed.error.message
    assert events[-1].event_type is h.E.RUN_FAILURE
    await nc.close()

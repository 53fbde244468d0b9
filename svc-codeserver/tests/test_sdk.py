"""SDK unit tests: graph building, aliases, config schemas and run-config validation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field, create_model
from tether.codeserver.worker.run_config import RunConfigError, resolve_op_configs
from tether.sdk import DefinitionError, Definitions, OpContext, OutputHandle, job, op


@op
def source() -> int:
    return 1


@op(name="double_it", description="Doubles.", tags={"k": "v"})
def double(x: int) -> int:
    return 2 * x


@op
def combine(context: OpContext, values: list[int], extra: int = 0) -> int:
    return sum(values) + extra


def _edges(j):
    return [(e.from_node, e.from_output, e.to_node, e.to_input) for e in j.edges]


def test_op_signature_is_introspected() -> None:
    assert double.name == "double_it"
    assert double.description == "Doubles."
    assert dict(double.tags) == {"k": "v"}
    assert [(i.name, i.type_name) for i in double.inputs] == [("x", "int")]
    assert double.output_type_name == "int"
    assert combine.wants_context and not double.wants_context
    assert [(i.name, i.has_default) for i in combine.inputs] == [("values", False), ("extra", True)]


def test_op_called_outside_a_job_runs_the_function() -> None:
    assert double(21) == 42


def test_job_builds_nodes_edges_aliases_fan_out_and_fan_in() -> None:
    @job(name="graph", tags={"team": "t"})
    def graph() -> None:
        s = source()
        combine([double(s), double(s), double.alias("third")(s)], extra=source())

    assert [n.name for n in graph.nodes] == [
        "source",
        "double_it",
        "double_it_2",
        "third",
        "source_2",
        "combine",
    ]
    assert _edges(graph) == [
        ("source", "result", "double_it", "x"),
        ("source", "result", "double_it_2", "x"),
        ("source", "result", "third", "x"),
        ("double_it", "result", "combine", "values"),
        ("double_it_2", "result", "combine", "values"),
        ("third", "result", "combine", "values"),
        ("source_2", "result", "combine", "extra"),
    ]
    assert graph.node("combine").upstream() == ["double_it", "double_it_2", "third", "source_2"]
    assert dict(graph.tags) == {"team": "t"}


def test_bare_job_uses_function_name_and_docstring() -> None:
    @job
    def my_job() -> None:
        """Docs."""
        double(source())

    assert my_job.name == "my_job"
    assert my_job.description == "Docs."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lambda: double(), "input 'x' is not connected"),
        (lambda: double(3), "must be the output of another op"),
        (lambda: double(source(), x=source()), "given twice"),
        (lambda: double(y=source()), "has no input 'y'"),
        (lambda: (double.alias("a")(source()), double.alias("a")(source())), "used twice"),
        (lambda: None, "calls no ops"),
    ],
)
def test_job_body_errors_are_clear(body, message) -> None:
    with pytest.raises(DefinitionError, match=message):
        job(name="bad")(body)


def test_invalid_names_are_rejected() -> None:
    with pytest.raises(DefinitionError, match="invalid op name"):
        op(name="has space")(lambda: None)
    with pytest.raises(DefinitionError, match="invalid job name"):
        job(name="a.b")(lambda: source())


def test_config_parameter_must_be_a_pydantic_model() -> None:
    def bad(config: dict) -> None: ...

    with pytest.raises(DefinitionError, match="pydantic BaseModel"):
        op(bad)


def test_definitions_reject_duplicate_jobs_and_find_jobs() -> None:
    @job(name="j")
    def j() -> None:
        source()

    with pytest.raises(DefinitionError, match="defined twice"):
        Definitions(jobs=[j, j])
    defs = Definitions(jobs=[j], name="repo")
    assert defs.get_job("j") is j
    with pytest.raises(KeyError, match="jobs: j"):
        defs.get_job("nope")


class Inner(BaseModel):
    level: int = Field(ge=0)


class ConfigA(BaseModel):
    name: str
    inner: Inner
    retries: int = 3


# Same class name as ``Inner`` (as from another module), different fields.
OtherInner = create_model("Inner", path=(str, ...))


class ConfigB(BaseModel):
    """Same nested model name as ConfigA's, different content: must not clash."""

    inner: OtherInner | None = None  # type: ignore[valid-type]
    flag: bool = False


@op
def configured_a(config: ConfigA) -> str:
    return config.name


@op
def configured_b(config: ConfigB) -> bool:
    return config.flag


@job
def configured_job() -> None:
    configured_a()
    configured_b()


def test_job_config_schema_shape_required_and_hoisted_defs() -> None:
    schema = configured_job.config_schema()
    Draft202012Validator.check_schema(schema)
    ops = schema["properties"]["ops"]
    assert schema["additionalProperties"] is False and schema["required"] == ["ops"]
    assert ops["required"] == ["configured_a"]  # ConfigB has no required field
    assert ops["additionalProperties"] is False
    node = ops["properties"]["configured_a"]
    assert node["required"] == ["config"] and node["additionalProperties"] is False
    assert node["properties"]["config"]["title"] == "ConfigA"
    assert "$defs" not in node["properties"]["config"]
    # Both nested models live at the root, one renamed, each reference resolving.
    assert set(schema["$defs"]) == {"Inner", "configured_b__Inner"}
    # The op's own snapshot schema stays self-contained.
    assert "$defs" in configured_a.config_schema()


def test_job_config_schema_validates_nested_refs() -> None:
    validator = Draft202012Validator(configured_job.config_schema())
    good = {
        "ops": {
            "configured_a": {"config": {"name": "n", "inner": {"level": 1}}},
            "configured_b": {"config": {"inner": {"path": "/x"}}},
        }
    }
    assert list(validator.iter_errors(good)) == []
    bad_a = {"ops": {"configured_a": {"config": {"name": "n", "inner": {"level": -1}}}}}
    assert [e.message for e in validator.iter_errors(bad_a)] == ["-1 is less than the minimum of 0"]
    bad_b = {
        "ops": {
            "configured_a": {"config": {"name": "n", "inner": {"level": 1}}},
            "configured_b": {"config": {"inner": {"level": 1}}},
        }
    }
    assert list(validator.iter_errors(bad_b)), "configured_b.inner must use its own Inner"


def test_resolve_op_configs_builds_models() -> None:
    configs = resolve_op_configs(
        configured_job, {"ops": {"configured_a": {"config": {"name": "n", "inner": {"level": 2}}}}}
    )
    assert configs["configured_a"] == ConfigA(name="n", inner=Inner(level=2))
    assert configs["configured_b"] == ConfigB()


@pytest.mark.parametrize(
    ("run_config", "expected"),
    [
        ({}, "<root>: 'ops' is a required property"),
        ({"ops": {}}, "/ops: 'configured_a' is a required property"),
        ({"ops": {"configured_a": {"config": {"inner": {"level": 1}}}}}, "'name' is a required"),
        ({"ops": {"nope": {}}, "x": 1}, "Additional properties are not allowed"),
        (
            {"ops": {"configured_a": {"config": {"name": 5, "inner": {"level": 1}}}}},
            "not of type 'string'",
        ),
    ],
)
def test_resolve_op_configs_rejects_invalid_config(run_config, expected) -> None:
    with pytest.raises(RunConfigError) as info:
        resolve_op_configs(configured_job, run_config)
    assert any(expected in e for e in info.value.errors), info.value.errors
    assert "configured_job" in str(info.value)


def test_job_without_config_accepts_empty_config_only() -> None:
    @job(name="plain")
    def plain() -> None:
        double(source())

    assert resolve_op_configs(plain, {}) == {"source": None, "double_it": None}
    with pytest.raises(RunConfigError, match="Additional properties"):
        resolve_op_configs(plain, {"ops": {"source": {"config": {}}}})


def test_output_handle_is_returned_in_job_body() -> None:
    handles: list[object] = []

    @job(name="h")
    def h() -> None:
        handles.append(source())

    assert handles == [OutputHandle("source", "result")]


@pytest.mark.integration
def test_importing_the_sdk_stays_light() -> None:
    code = (
        "import sys, tether.sdk\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'nats', 'opentelemetry', 'jsonschema', 'google', 'croniter', 'dateutil')]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Validating a run's config against its job, before any op runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from tether.sdk import JobDefinition
from tether.shared.wire.errors import TetherError


class RunConfigError(TetherError, ValueError):
    """The run config does not match the job's config schema.

    Attributes:
        errors: one readable line per problem, each starting with its JSON path.
    """

    def __init__(self, job_name: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"invalid run config for job {job_name!r}: " + "; ".join(errors))


def _path(parts: Any) -> str:
    return "/" + "/".join(str(p) for p in parts) if parts else "<root>"


def resolve_op_configs(
    job: JobDefinition, run_config: dict[str, Any]
) -> dict[str, BaseModel | None]:
    """Validate ``run_config`` and build each node's config model instance.

    First against the job's JSON Schema (the same one the UI and API use), reporting
    every problem at once; then through each op's pydantic model, which may be stricter.

    Returns:
        node name -> config model instance (None for ops without config).

    Raises:
        RunConfigError: the config is invalid; no op has run.
    """
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(job.config_schema())
    problems = sorted(validator.iter_errors(run_config), key=lambda e: list(e.absolute_path))
    errors = [f"{_path(e.absolute_path)}: {e.message}" for e in problems]
    if errors:
        raise RunConfigError(job.name, errors)
    op_section = run_config.get("ops", {})
    configs: dict[str, BaseModel | None] = {}
    for node in job.nodes:
        model = node.op.config_model
        if model is None:
            configs[node.name] = None
            continue
        raw = op_section.get(node.name, {}).get("config", {})
        try:
            configs[node.name] = model.model_validate(raw)
        except ValidationError as err:
            errors.extend(
                f"{_path(['ops', node.name, 'config', *e['loc']])}: {e['msg']}"
                for e in err.errors()
            )
    if errors:
        raise RunConfigError(job.name, errors)
    return configs

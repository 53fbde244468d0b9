"""JSON Schema of a job's run config, assembled from its ops' pydantic config models.

Run config looks like ``{"ops": {"<node>": {"config": {...}}}}``. Each op's schema is
its model's ``model_json_schema()``; their ``$defs`` are hoisted to the job schema's root
(renamed on a clash) so every ``#/$defs/...`` reference resolves against the job schema.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.sdk._job import JobDefinition

_DEFS_PREFIX = "#/$defs/"


def _rewrite_refs(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith(_DEFS_PREFIX):
                target = item[len(_DEFS_PREFIX) :]
                out[key] = _DEFS_PREFIX + renames.get(target, target)
            else:
                out[key] = _rewrite_refs(item, renames)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(item, renames) for item in value]
    return value


def _hoist_defs(schema: dict[str, Any], node: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move ``schema``'s ``$defs`` into ``defs`` (renaming clashes) and return the rest."""
    schema = copy.deepcopy(schema)
    local = schema.pop("$defs", {})
    renames: dict[str, str] = {}
    for def_name, definition in local.items():
        if def_name not in defs or defs[def_name] == definition:
            continue
        renames[def_name] = f"{node}__{def_name}"
    for def_name, definition in local.items():
        target = renames.get(def_name, def_name)
        defs[target] = _rewrite_refs(definition, renames)
    return _rewrite_refs(schema, renames)


#: The optional ``execution`` section of a run config: one executor, with its options.
EXECUTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Overrides the job's executor for this run.",
    "properties": {
        "in_process": {"type": "object", "additionalProperties": False},
        "multiprocess": {
            "type": "object",
            "properties": {
                "max_concurrent": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Most steps running at once (default: CPU count).",
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
}


def job_config_schema(job: JobDefinition) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) that a run config of ``job`` must satisfy."""
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for node in job.nodes:
        op_schema = node.op.config_schema()
        if op_schema is None:
            continue
        properties[node.name] = {
            "type": "object",
            "properties": {"config": _hoist_defs(op_schema, node.name, defs)},
            "required": ["config"],
            "additionalProperties": False,
        }
        if node.op.config_required():
            required.append(node.name)
    ops: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        ops["required"] = required
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"ops": ops, "execution": EXECUTION_SCHEMA},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = ["ops"]
    if defs:
        schema["$defs"] = defs
    return schema

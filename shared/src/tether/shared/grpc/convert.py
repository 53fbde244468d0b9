"""Pure conversions between the protobuf messages and the pydantic wire models."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from tether.shared.grpc import codeserver_pb2 as pb
from tether.shared.messages import (
    Edge,
    ErrorInfo,
    JobSnapshot,
    LocationSnapshot,
    OpInput,
    OpOutput,
    OpSnapshot,
    RepositorySnapshot,
)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def error_to_proto(error: ErrorInfo) -> pb.Error:
    """ErrorInfo -> pb.Error."""
    msg = pb.Error(cls_name=error.cls_name, message=error.message, traceback=error.traceback)
    if error.cause is not None:
        msg.cause.CopyFrom(error_to_proto(error.cause))
    return msg


def error_from_proto(msg: pb.Error) -> ErrorInfo:
    """pb.Error -> ErrorInfo."""
    cause = error_from_proto(msg.cause) if msg.HasField("cause") else None
    return ErrorInfo(
        cls_name=msg.cls_name, message=msg.message, traceback=msg.traceback, cause=cause
    )


def snapshot_to_proto(snap: LocationSnapshot) -> pb.LocationSnapshot:
    """LocationSnapshot -> pb.LocationSnapshot."""
    return pb.LocationSnapshot(
        location_name=snap.location_name,
        repositories=[
            pb.Repository(
                name=repo.name,
                description=repo.description,
                jobs=[_job_to_proto(job) for job in repo.jobs],
            )
            for repo in snap.repositories
        ],
    )


def _job_to_proto(job: JobSnapshot) -> pb.Job:
    return pb.Job(
        name=job.name,
        description=job.description,
        tags=job.tags,
        ops=[
            pb.Op(
                name=op.name,
                description=op.description,
                tags=op.tags,
                inputs=[pb.OpInput(name=i.name, type_name=i.type_name) for i in op.inputs],
                outputs=[pb.OpOutput(name=o.name, type_name=o.type_name) for o in op.outputs],
                config_schema=_struct(op.config_schema or {}),
                has_config_schema=op.config_schema is not None,
            )
            for op in job.ops
        ],
        edges=[
            pb.Edge(
                from_op=e.from_op, from_output=e.from_output, to_op=e.to_op, to_input=e.to_input
            )
            for e in job.edges
        ],
        config_schema=_struct(job.config_schema),
    )


def snapshot_from_proto(msg: pb.LocationSnapshot) -> LocationSnapshot:
    """pb.LocationSnapshot -> LocationSnapshot."""
    return LocationSnapshot(
        location_name=msg.location_name,
        repositories=[
            RepositorySnapshot(
                name=repo.name,
                description=repo.description,
                jobs=[_job_from_proto(job) for job in repo.jobs],
            )
            for repo in msg.repositories
        ],
    )


def _job_from_proto(msg: pb.Job) -> JobSnapshot:
    return JobSnapshot(
        name=msg.name,
        description=msg.description,
        tags=dict(msg.tags),
        ops=[
            OpSnapshot(
                name=op.name,
                description=op.description,
                tags=dict(op.tags),
                inputs=[OpInput(name=i.name, type_name=i.type_name) for i in op.inputs],
                outputs=[OpOutput(name=o.name, type_name=o.type_name) for o in op.outputs],
                config_schema=_dict(op.config_schema) if op.has_config_schema else None,
            )
            for op in msg.ops
        ],
        edges=[
            Edge(from_op=e.from_op, from_output=e.from_output, to_op=e.to_op, to_input=e.to_input)
            for e in msg.edges
        ],
        config_schema=_dict(msg.config_schema),
    )

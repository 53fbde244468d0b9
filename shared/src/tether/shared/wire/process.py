"""Process-level messages between a launcher and the processes it starts (argv, readiness).

The command lines of a code server, a fork server and a run worker are built here only
(:func:`code_server_argv`, :func:`fork_server_argv`, :func:`run_worker_argv`), for every
substrate; env values never appear in them (:func:`argv_location`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from tether.shared.wire.base import WireModel
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import LaunchRunPayload

#: The bind address of a code server in a network namespace of its own (container, pod,
#: task): every interface of that namespace, which only the launcher's traffic reaches
#: (NetworkPolicies, security groups); code servers on the host bind loopback instead.
ANY_INTERFACE = "0.0.0.0"  # noqa: S104


#: The run worker's environment variable that says how many seconds after a termination's
#: SIGTERM it interrupts the running op by itself (the launcher sets half its grace period:
#: a platform that sends one SIGTERM before its SIGKILL, as Kubernetes and ECS do, then
#: still gets the op interrupted and its cleanup run).
INTERRUPT_AFTER_ENV = "TETHER_RUN_WORKER_INTERRUPT_AFTER_S"


class ExecuteRunArgs(WireModel):
    """Everything ``tether api execute-run`` needs, passed as one JSON argument."""

    type: Literal["tether.v1.execute_run_args"] = "tether.v1.execute_run_args"
    location: LocationConfig
    run: LaunchRunPayload
    nats_url: str
    traceparent: str | None = None


#: The module every process a launcher starts runs (``python -m`` it).
CLI_MODULE = "tether.shared.runtime.cli"

#: What a redacted env value reads in argv: the value is in the process's environment.
REDACTED = ""


def argv_location(location: LocationConfig) -> LocationConfig:
    """``location`` as it may appear on a command line: env names kept, values removed.

    User code never reads ``location.env`` (its values are in its environment); the
    fork server, its children and cold workers all get this same form, so their configs
    compare equal.
    """
    if not location.env:
        return location
    return location.model_copy(update={"env": dict.fromkeys(location.env, REDACTED)})


def argv_args(args: ExecuteRunArgs) -> ExecuteRunArgs:
    """``args`` as they may appear on a command line (see :func:`argv_location`)."""
    if not args.location.env:
        return args
    return args.model_copy(update={"location": argv_location(args.location)})


def code_server_argv(
    python: str, location: LocationConfig, *, host: str | None = None, port: int | None = None
) -> list[str]:
    """The command line of ``location``'s code server (``tether codeserver grpc``).

    Args:
        python: the interpreter (a path, or a name on the image's PATH).
        location: its config; env values are removed (:func:`argv_location`).
        host: interface to bind; None: the code server's default (loopback).
        port: port to bind; None: the code server's default (a free one).
    """
    argv = [python, "-m", CLI_MODULE, "codeserver", "grpc"]
    argv += ["--location-json", argv_location(location).model_dump_json()]
    if host is not None:
        argv += ["--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    return argv


def fork_server_argv(
    python: str,
    location: LocationConfig,
    socket_path: str,
    output_fds: tuple[int, int] | None = None,
) -> list[str]:
    """The command line of ``location``'s fork server (``tether codeserver forkserver``).

    Args:
        python: the interpreter.
        location: its config; env values are removed (:func:`argv_location`).
        socket_path: the Unix socket it serves fork requests on.
        output_fds: inherited stdout and stderr descriptors its run workers write to.
    """
    argv = [python, "-m", CLI_MODULE, "codeserver", "forkserver"]
    argv += ["--location-json", argv_location(location).model_dump_json()]
    argv += ["--socket", socket_path]
    if output_fds is not None:
        argv += ["--stdout-fd", str(output_fds[0]), "--stderr-fd", str(output_fds[1])]
    return argv


def run_worker_argv(python: str, args: ExecuteRunArgs | str) -> list[str]:
    """The command line of a run worker (``tether api execute-run``) for ``args``.

    Env values are removed from the location (:func:`argv_args`). A string instead of
    args is what stands for them, which the container runtime replaces (Kubernetes:
    ``$(TETHER_RUN_ARGS)``, from a Secret): the args are then not in the object that
    starts the worker.
    """
    shown = args if isinstance(args, str) else argv_args(args).model_dump_json()
    return [python, "-m", CLI_MODULE, "api", "execute-run", shown]


class CodeServerReady(WireModel):
    """The first stdout line of a code server process once its port is bound."""

    type: Literal["tether.v1.codeserver_ready"] = "tether.v1.codeserver_ready"
    address: str = Field(description="host:port the gRPC server listens on.")
    pid: int

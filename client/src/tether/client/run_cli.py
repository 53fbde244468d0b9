"""``tether run launch|list|logs|reexecute|terminate``: runs through the control plane's API.

Listing and logs need a viewer token, launching, re-executing and terminating an editor token
(``TETHER_TOKEN``, or a file: ``--token-file`` / ``TETHER_TOKEN_FILE``); ``--url`` /
``TETHER_CONTROL_PLANE_URL`` says where the control plane is. ``launch`` and ``reexecute``
print the new run's id on stdout (alone, for scripts).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from tether.client import documents
from tether.client.remote import (
    DEFAULT_URL,
    ApiCommandGroup,
    AsJson,
    Token,
    Url,
    call,
    fail,
    parse_json_object,
    parse_pairs,
    read_config_file,
)
from tether.shared.wire.runs import RunStatus

app = typer.Typer(
    name="run", help="Launch, list, follow the logs of and terminate runs.", cls=ApiCommandGroup
)

#: A computeLogs offset past any real log: answers which (step, stream) exist, without bytes.
_PAST_END = 2**31 - 1
#: Most bytes of one (step, stream) per computeLogs answer (a long log comes in pieces).
_READ_BYTES = 4 * 1024 * 1024

Tags = Annotated[
    list[str] | None,
    typer.Option("--tag", help="Tag KEY=VALUE (repeatable).", show_default=False),
]
PollInterval = Annotated[
    float, typer.Option(help="Seconds between polls of --wait / --follow.", min=0.05)
]


@app.callback()
def _group() -> None:
    """Launch, list, follow the logs of and terminate runs."""


def _status(run_id: str, url: str, token: str | None) -> str:
    run = call(url, token, documents.RUN_STATUS, id=run_id)["run"]
    if run is None:
        fail(f"NOT_FOUND: no run {run_id!r}")
    return str(run["status"])


@app.command()
def launch(
    job: Annotated[str, typer.Argument(help="Job to run.")],
    location: Annotated[str, typer.Option(help="Code location of the job.")],
    repository: Annotated[
        str | None, typer.Option(help="Repository (if the job name is ambiguous).")
    ] = None,
    config_json: Annotated[
        str | None, typer.Option("--config-json", help="Run config as a JSON object.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config-file", help="Run config file (.json, .yaml, .yml).")
    ] = None,
    tag: Tags = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end; exit 1 unless SUCCESS.")
    ] = False,
    poll_interval: PollInterval = 1.0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Launch a run of JOB; its config is validated against the job's config schema."""
    if config_json is not None and config_file is not None:
        raise typer.BadParameter("give at most one of --config-json and --config-file")
    run_config: dict[str, Any] | None = None
    if config_json is not None:
        run_config = parse_json_object(config_json, "--config-json")
    elif config_file is not None:
        run_config = read_config_file(config_file, "--config-file")
    outcome = call(
        url,
        token,
        documents.LAUNCH_RUN,
        loc=location,
        job=job,
        repo=repository,
        cfg=run_config,
        tags=parse_pairs(tag, "--tag") or None,
    )["launchRun"]
    if outcome["__typename"] != "LaunchRunSuccess":
        typer.echo(f"error: {outcome['__typename']}: {outcome['message']}", err=True)
        for error in outcome.get("errors") or []:
            typer.echo(f"  {error}", err=True)
        raise typer.Exit(1)
    run = outcome["run"]
    typer.echo(f"launched run {run['id']} of {job!r} ({run['status']})", err=True)
    _report_new_run(
        run, wait=wait, poll_interval=poll_interval, url=url, token=token, as_json=as_json
    )


def _report_new_run(
    run: dict[str, Any],
    *,
    wait: bool,
    poll_interval: float,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Print a new run (its id alone, or JSON); with ``wait``, first wait for its end."""
    status = run["status"]
    if wait:
        # Polling (not a subscription): the API has none, and a run lasts seconds at least.
        while not RunStatus(status).is_terminal:
            time.sleep(poll_interval)
            status = _status(run["id"], url, token)
        typer.echo(f"run {run['id']} ended {status}", err=True)
    if as_json:
        typer.echo(json.dumps({**run, "status": status}, indent=2))
    else:
        typer.echo(run["id"])
    if wait and status != RunStatus.SUCCESS:
        raise typer.Exit(1)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: dict[str, Any]) -> str:
    if run["startedAt"] is None:
        return "-"
    end = run["endedAt"] if run["endedAt"] is not None else time.time()
    return f"{end - run['startedAt']:.1f}s"


@app.command("list")
def list_runs(
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status (QUEUED, STARTED, SUCCESS...).")
    ] = None,
    job: Annotated[str | None, typer.Option(help="Only runs of this job.")] = None,
    tag: Tags = None,
    limit: Annotated[int, typer.Option(help="Most runs to list (newest first).", min=0)] = 20,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List runs, newest first; filters combine."""
    if status is not None:
        try:
            status = RunStatus(status.upper()).value
        except ValueError as err:
            choices = ", ".join(s.value for s in RunStatus)
            raise typer.BadParameter(f"unknown status {status!r} (one of {choices})") from err
    found = call(
        url,
        token,
        documents.RUNS,
        status=status,
        job=job,
        tags=parse_pairs(tag, "--tag") or None,
        limit=limit,
    )["runs"]
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "job", "location", "status", "created (UTC)", "duration", "tags")
    for run in found:
        table.add_row(
            run["id"],
            run["jobName"],
            run["locationName"],
            run["status"],
            _when(run["createdAt"]),
            _duration(run),
            " ".join(f"{k}={v}" for k, v in sorted((run["tags"] or {}).items())),
        )
    Console(width=200).print(table)


def _customer_storage_logs(
    url: str, token: str | None, run_id: str, step: str | None, stream: str | None
) -> list[dict[str, Any]]:
    """Streams kept in the customer's storage, read through URLs the agent presigns.

    The control plane only knows where the objects are; the bytes come straight from the
    bucket, which must be reachable from here.
    """
    import httpx

    pieces: list[dict[str, Any]] = []
    wanted = [
        s
        for s in call(url, token, documents.LOG_STREAMS, id=run_id)["computeLogStreams"]
        if s["storage"] != "controlplane"
        and step in (None, s["stepKey"])
        and stream in (None, s["stream"])
    ]
    with httpx.Client(timeout=60) as http:
        for found in wanted:
            data = bytearray()
            offset = 0
            while True:
                answer = call(
                    url, token, documents.LOG_URLS, id=run_id, step=found["stepKey"],
                    stream=found["stream"], offset=offset,
                )["computeLogUrls"]  # fmt: skip
                for part in answer["urls"]:
                    try:
                        got = http.get(part["url"])
                    except httpx.HTTPError as err:
                        fail(f"cannot read {found['storage']} object: {err}")
                    if got.status_code != 200:
                        where = found["storage"]
                        fail(f"{where} answered HTTP {got.status_code}: {got.text[:200]}")
                    data += got.content[part["skip"] :]
                if not answer["hasMore"]:
                    break
                offset = answer["nextOffset"]
            pieces.append(
                {
                    "stepKey": found["stepKey"],
                    "stream": found["stream"],
                    "offset": 0,
                    "nextOffset": len(data),
                    "text": data.decode("utf-8", errors="replace"),
                    "storage": found["storage"],
                }
            )
    return pieces


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(help="Id of the run.")],
    step: Annotated[str | None, typer.Option(help="Only this step's output.")] = None,
    stream: Annotated[str | None, typer.Option(help="Only stdout or stderr.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output until the run ends.")
    ] = False,
    poll_interval: PollInterval = 1.0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Print a run's compute logs (lines prefixed by step:stream unless both are given).

    Streams the agent keeps in the customer's storage (logship's S3 mode) are read
    through short-lived URLs the agent presigns, straight from the bucket; with --follow
    they are printed once the run has ended.
    """
    raw = step is not None and stream is not None

    def read(
        key_step: str | None, key_stream: str | None, offset: int, limit: int | None = None
    ) -> dict[str, Any]:
        run = call(
            url, token, documents.RUN_LOGS, id=run_id, step=key_step, stream=key_stream,
            offset=offset, limit=limit,
        )  # fmt: skip
        if run["run"] is None:
            fail(f"NOT_FOUND: no run {run_id!r}")
        return run["run"]

    def read_through(key: tuple[str, str], offset: int) -> dict[str, Any]:
        """One (step, stream) from ``offset`` to what is stored now, in bounded answers."""
        texts: list[str] = []
        position = offset
        while True:
            pieces = read(key[0], key[1], position, _READ_BYTES)["computeLogs"]
            if not pieces:
                break
            texts.append(pieces[0]["text"])
            got, position = pieces[0]["nextOffset"] - position, pieces[0]["nextOffset"]
            if got < _READ_BYTES:
                break
        text = "".join(texts)
        return {"stepKey": key[0], "stream": key[1], "offset": offset, "nextOffset": position,
                "text": text}  # fmt: skip

    def show(piece: dict[str, Any]) -> None:
        if raw:
            typer.echo(piece["text"], nl=False)
            return
        prefix = f"{piece['stepKey']}:{piece['stream']} | "
        for line in piece["text"].splitlines():
            typer.echo(prefix + line)

    if not follow:
        pieces = [
            read_through((p["stepKey"], p["stream"]), 0)
            for p in read(step, stream, _PAST_END)["computeLogs"]
        ]
        pieces += _customer_storage_logs(url, token, run_id, step, stream)
        pieces.sort(key=lambda p: (p["stepKey"], p["stream"]))
        if as_json:
            typer.echo(json.dumps(pieces, indent=2))
            return
        for piece in pieces:
            show(piece)
        return
    if as_json:
        raise typer.BadParameter("--json cannot be combined with --follow")
    # Each (step, stream) is read from where the previous poll stopped (nextOffset), so
    # nothing is printed twice; a chunk still in flight stops its slice until it lands.
    offsets: dict[tuple[str, str], int] = {}
    while True:
        known = read(step, stream, _PAST_END)
        for piece in known["computeLogs"]:
            offsets.setdefault((piece["stepKey"], piece["stream"]), 0)
        ended = RunStatus(known["status"]).is_terminal
        for key, offset in sorted(offsets.items()):
            piece = read_through(key, offset)
            if piece["text"]:
                show(piece)
            offsets[key] = piece["nextOffset"]
        if ended:
            # The status was read before the last logs: whatever the run wrote is shown.
            for piece in _customer_storage_logs(url, token, run_id, step, stream):
                show(piece)
            return
        time.sleep(poll_interval)


@app.command()
def reexecute(
    run_id: Annotated[str, typer.Argument(help="Id of the finished run to re-execute.")],
    from_failure: Annotated[
        bool,
        typer.Option(
            "--from-failure",
            help="Only the steps that did not succeed and those downstream of them; the "
            "other steps' outputs are reused from the run (a failed or canceled run only).",
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the new run to end; exit 1 unless SUCCESS.")
    ] = False,
    poll_interval: PollInterval = 1.0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Launch a new run of a finished run's job, config and tags; print the new run's id."""
    strategy = "FROM_FAILURE" if from_failure else "ALL_STEPS"
    outcome = call(url, token, documents.REEXECUTE_RUN, id=run_id, strategy=strategy)[
        "reexecuteRun"
    ]
    if outcome["__typename"] != "LaunchRunSuccess":
        typer.echo(f"error: {outcome['__typename']}: {outcome['message']}", err=True)
        for error in outcome.get("errors") or []:
            typer.echo(f"  {error}", err=True)
        raise typer.Exit(1)
    run = outcome["run"]
    steps = run["stepSelection"]
    what = f"steps {', '.join(steps)}" if steps is not None else "all steps"
    typer.echo(f"launched run {run['id']} re-executing {run_id} ({what})", err=True)
    _report_new_run(
        run, wait=wait, poll_interval=poll_interval, url=url, token=token, as_json=as_json
    )


@app.command()
def terminate(
    run_id: Annotated[str, typer.Argument(help="Id of the run.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Terminate a run: cancel it if not launched yet, otherwise interrupt its worker."""
    outcome = call(url, token, documents.TERMINATE_RUN, id=run_id)["terminateRun"]
    if outcome["__typename"] != "TerminateRunSuccess":
        fail(f"{outcome['__typename']}: {outcome['message']}")
    run = outcome["run"]
    if as_json:
        typer.echo(json.dumps(run, indent=2))
    else:
        typer.echo(f"run {run['id']} is {run['status']}")

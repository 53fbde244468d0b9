"""The work spec table: complete, consistent, and typing the wire without changing it."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import ValidationError
from tether.shared.nats import subjects
from tether.shared.wire.base import WireModel, decode, encode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.signing import WorkSigner, WorkVerifier
from tether.shared.wire.snapshots import SNAPSHOT_ZLIB_KEY, LocationSnapshot
from tether.shared.wire.work import (
    LaunchRunPayload,
    ReportKind,
    RunLaunched,
    RunWorkerExited,
    TerminateRunPayload,
    WorkItem,
    WorkKind,
    WorkResult,
)
from tether.shared.wire.workspecs import (
    REPORT_SPECS,
    WORK_SPECS,
    IncompleteHandlersError,
    ServedBy,
    SlotGroup,
    kinds_served_by,
    require_handlers,
    result_spec,
)


def test_every_kind_has_one_consistent_spec() -> None:
    assert set(WORK_SPECS) == set(WorkKind)
    assert set(REPORT_SPECS) == set(ReportKind)
    for kind, spec in WORK_SPECS.items():
        assert spec.kind == kind
        assert issubclass(spec.payload, WireModel) and issubclass(spec.result, WireModel)
        # Kinds a launcher sees wait in a slot group; agent-wide ones never reach one.
        assert (spec.slots is None) == (spec.served_by == ServedBy.AGENT), kind
    for kind, report in REPORT_SPECS.items():
        assert report.kind == kind and report.about <= set(WorkKind)
        assert result_spec(kind) is report
    served = {server: kinds_served_by(server) for server in (*ServedBy, None)}
    assert set().union(*served.values()) == set(WorkKind)
    assert served[ServedBy.AGENT] == {WorkKind.PRESIGN_COMPUTE_LOGS}
    assert served[None] == {WorkKind.PING_LOCATION}
    assert {WORK_SPECS[k].slots for k in served[ServedBy.LAUNCHER]} == set(SlotGroup)


@pytest.mark.parametrize("kind", list(WorkKind))
def test_the_poller_routes_each_kind_where_its_spec_says(kind: WorkKind) -> None:
    subject = subjects.route_work("docker", kind)
    if WORK_SPECS[kind].served_by == ServedBy.AGENT:
        assert subject == subjects.agent_work(kind)
    else:
        assert subject == subjects.work("docker", kind)


def test_a_service_with_a_kind_unhandled_or_foreign_refuses_to_start() -> None:
    handlers = {kind: object() for kind in kinds_served_by(ServedBy.LAUNCHER)}
    assert dict(require_handlers(ServedBy.LAUNCHER, handlers)) == handlers
    missing = dict(handlers)
    del missing[WorkKind.STOP_LOCATION]
    with pytest.raises(IncompleteHandlersError, match="missing stop_location; not served"):
        require_handlers(ServedBy.LAUNCHER, missing)
    foreign = handlers | {WorkKind.PRESIGN_COMPUTE_LOGS: object()}
    with pytest.raises(IncompleteHandlersError, match="not served by launcher: presign"):
        require_handlers(ServedBy.LAUNCHER, foreign)


def test_payloads_are_built_from_their_kinds_model_only() -> None:
    spec = WORK_SPECS[WorkKind.TERMINATE_RUN]
    assert spec.payload_json(TerminateRunPayload(run_id="r1")) == {"run_id": "r1"}
    with pytest.raises(TypeError, match="carries a TerminateRunPayload, not a LaunchRun"):
        spec.payload_json(LaunchRunPayload(run_id="r1", job_name="j"))
    with pytest.raises(TypeError, match="carries a RunTerminated"):
        spec.result_json(RunLaunched(run_id="r1"))


def test_reading_the_typed_payload_leaves_the_signed_item_as_sent() -> None:
    signer = WorkSigner.generate()
    spec = WORK_SPECS[WorkKind.LAUNCH_RUN]
    # As an older control plane might send it: fewer keys than the model has fields.
    item = signer.sign(
        WorkItem(
            id="i1",
            kind=WorkKind.LAUNCH_RUN,
            location=LocationConfig(name="loc", module="jobs"),
            payload={"run_id": "r1", "job_name": "hello"},
            expires_at=time.time() + 600,
        )
    )
    received = decode(encode(item), WorkItem)
    payload = spec.payload_of(received)
    assert payload == LaunchRunPayload(run_id="r1", job_name="hello")
    assert received.payload == {"run_id": "r1", "job_name": "hello"}
    WorkVerifier([signer.public_key], "").verify(received)
    with pytest.raises(ValidationError):
        spec.payload_of(received.model_copy(update={"payload": {"run_id": "r1"}}))


def test_typed_results_keep_the_json_launchers_have_always_sent() -> None:
    spec = WORK_SPECS[WorkKind.LAUNCH_RUN]
    assert spec.result_json(RunLaunched(run_id="r1", pid=7, warm=True)) == {
        "run_id": "r1",
        "pid": 7,
        "warm": True,
    }
    # A redelivered launch reports the earlier one without knowing whether it was warm.
    assert spec.result_json(RunLaunched(run_id="r1", pid=None)) == {"run_id": "r1", "pid": None}
    report = REPORT_SPECS[ReportKind.RUN_WORKER_EXITED]
    exited = WorkResult(
        id=report.report_id("i1"),
        work_item_id="i1",
        kind=report.kind,
        ok=False,
        payload=report.result_json(RunWorkerExited(run_id="r1", exit_code=-9)),
    )
    body = json.loads(encode(exited))
    assert body["id"] == "i1.exit" and body["kind"] == "run_worker_exited"
    assert body["payload"] == {"run_id": "r1", "exit_code": -9}
    again = decode(encode(exited), WorkResult)
    assert again.kind is ReportKind.RUN_WORKER_EXITED
    assert report.result_of(again) == RunWorkerExited(run_id="r1", exit_code=-9)
    assert decode(encode(exited).replace(b"run_worker_exited", b"launch_run"), WorkResult).kind is (
        WorkKind.LAUNCH_RUN
    )


def test_a_snapshot_result_travels_through_its_codec() -> None:
    spec = WORK_SPECS[WorkKind.LOAD_LOCATION]
    snapshot = LocationSnapshot(location_name="loc", repositories=[])
    payload = spec.result_json(snapshot)
    assert set(payload) == {"snapshot"}
    result = WorkResult(id="i", work_item_id="i", kind=spec.kind, ok=True, payload=payload)
    assert spec.result_of(result) == snapshot
    packed = WorkResult(id="i", work_item_id="i", kind=spec.kind, ok=True, payload={})
    with pytest.raises(ContractError, match=SNAPSHOT_ZLIB_KEY):
        spec.result_of(packed)

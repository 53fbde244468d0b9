"""Unit tests of the pure contracts: subjects and message codecs."""

from __future__ import annotations

import pytest
from tether.shared.nats import subjects
from tether.shared.nats.headers import decode_log_chunk, encode_log_chunk
from tether.shared.wire.base import ErrorInfo, decode, encode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import WorkItem, WorkKind


def test_subject_builders_reject_unsafe_tokens() -> None:
    assert subjects.events("abc123") == "tether.events.abc123"
    assert subjects.logs("r1", "step_a", LogStream.STDERR) == "tether.logs.r1.step_a.stderr"
    assert subjects.work("process", WorkKind.LAUNCH_RUN) == "tether.work.process.launch_run"
    for bad in ("a.b", "a b", "*", ">", ""):
        with pytest.raises(ContractError):
            subjects.events(bad)


def test_run_event_round_trip_and_versioned_type() -> None:
    event = RunEvent(run_id="r1", seq=3, event_type=EventType.STEP_START, step_key="a")
    raw = encode(event)
    assert b'"tether.v1.run_event"' in raw
    assert decode(raw, RunEvent) == event


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        b'{"type": "tether.v2.run_event", "run_id": "r", "seq": 1, "event_type": "RUN_START"}',
        b'{"type": "tether.v1.run_event", "run_id": "r", "seq": 0, "event_type": "RUN_START"}',
    ],
)
def test_malformed_messages_raise_contract_error(raw: bytes) -> None:
    with pytest.raises(ContractError):
        decode(raw, RunEvent)


def test_log_chunk_travels_as_raw_bytes_with_key_in_headers() -> None:
    chunk = LogChunk(
        run_id="r", step_key="s", stream=LogStream.STDOUT, offset=42, data=b"\xff\x00x"
    )
    headers, body = encode_log_chunk(chunk)
    assert body == b"\xff\x00x"
    assert decode_log_chunk(headers, body) == chunk
    # JSON form (agent API) is base64 and round-trips binary data.
    assert LogChunk.model_validate(chunk.model_dump(mode="json")) == chunk
    with pytest.raises(ContractError):
        decode_log_chunk({"Tether-Type": "tether.v1.log_chunk"}, b"")
    with pytest.raises(ContractError):
        decode_log_chunk(None, b"")


def test_error_info_keeps_class_traceback_and_cause() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError("outer") from inner
    except ValueError as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.cls_name == "ValueError"
    assert "raise ValueError" in info.traceback
    assert info.cause is not None and info.cause.cls_name == "KeyError"


def test_work_item_rejects_unknown_kind() -> None:
    with pytest.raises(ContractError):
        decode(
            b'{"type": "tether.v1.work_item", "id": "x", "kind": "nope",'
            b' "location": {"name": "l"}}',
            WorkItem,
        )

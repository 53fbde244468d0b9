"""What the eventrelay reads from a dead-lettered run event to report its seq lost.

The whole path (a real relay dead-letters an event, reads the dead letter back, and the
control plane shows the seq lost) is ``tests/test_bad_upload_dead_lettered.py``.
"""

from __future__ import annotations

import json
from typing import Any, cast

from nats.aio.client import Client
from nats.aio.msg import Msg
from tether.eventrelay.lost import LostSeq, _reports, read_lost_seq
from tether.shared.nats import subjects
from tether.shared.nats.headers import MSG_ID_HEADER, REASON_HEADER, SOURCE_SUBJECT_HEADER
from tether.shared.wire.runs import MAX_LOST_SEQS


def dead_letter(body: Any, *, subject: str | None = None, **headers: str) -> Msg:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = {REASON_HEADER: "refused by control plane: timestamp must be finite"}
    out[SOURCE_SUBJECT_HEADER] = subject if subject is not None else subjects.events("r1")
    out.update(headers)
    return Msg(
        _client=cast("Client", None), subject="tether.dlq.TETHER_EVENTS", data=data, headers=out
    )


def test_the_run_and_seq_come_from_the_body_and_the_reason_from_its_header() -> None:
    lost = read_lost_seq(dead_letter({"run_id": "r1", "seq": 4, "timestamp": "NaN"}))
    assert lost == LostSeq("r1", 4, "refused by control plane: timestamp must be finite")


def test_an_unreadable_body_falls_back_on_the_workers_message_id() -> None:
    msg = dead_letter(b"\xff not json", **{MSG_ID_HEADER: "r1:17"})
    assert read_lost_seq(msg) == LostSeq("r1", 17, msg.headers[REASON_HEADER])  # type: ignore[index]
    # A body with the run but a seq out of range: the id's seq, if it names the same run.
    msg = dead_letter({"run_id": "r1", "seq": 2**63}, **{MSG_ID_HEADER: "r1:5"})
    assert read_lost_seq(msg) is not None and read_lost_seq(msg).seq == 5  # type: ignore[union-attr]
    assert (
        read_lost_seq(dead_letter({"run_id": "r1", "seq": 2**63}, **{MSG_ID_HEADER: "r9:5"}))
        is None
    )


def test_nothing_is_reported_when_run_or_seq_cannot_be_read() -> None:
    for body in (
        b"garbage",
        b"[" * 100_000,
        b'{"run_id": "r1", "seq": ' + b"9" * 5000 + b"}",
        [1, 2],
        {"seq": 3},
        {"run_id": "r1"},
        {"run_id": "r1", "seq": 0},
    ):
        assert read_lost_seq(dead_letter(body)) is None, body
    assert read_lost_seq(dead_letter({"run_id": "r1", "seq": True})) is None
    assert read_lost_seq(dead_letter({"run_id": "r1", "seq": 2**63})) is None


def test_only_the_run_whose_subject_it_came_from() -> None:
    # A worker may publish only to its own run's subject; a body naming another run is
    # not taken at its word.
    assert read_lost_seq(dead_letter({"run_id": "r2", "seq": 1})) is None
    assert read_lost_seq(dead_letter({"run_id": "r1", "seq": 1}, subject="")) is None
    assert read_lost_seq(dead_letter({"run_id": "a b", "seq": 1})) is None


def test_reports_group_seqs_by_run_and_reason() -> None:
    lost = [
        LostSeq("r2", 9, "x"),
        LostSeq("r1", 5, "x"),
        LostSeq("r1", 3, "x"),
        LostSeq("r1", 3, "x"),
        LostSeq("r1", 4, "y"),
    ]
    got = [(r.run_id, r.seqs, r.reason) for r in _reports(lost)]
    assert got == [("r1", [3, 5], "x"), ("r1", [4], "y"), ("r2", [9], "x")]
    many = _reports([LostSeq("r1", n, "x") for n in range(1, MAX_LOST_SEQS + 3)])
    assert [len(r.seqs) for r in many] == [MAX_LOST_SEQS, 2]

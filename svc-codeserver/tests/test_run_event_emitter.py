"""The run's event stream as the emitter numbers it: the terminal event names the last seq
and closes the stream (the control plane counts a run complete once it has seqs 1..last).

Real runs through NATS check the same on every worker test (``assert_numbered``); this
one pins what happens to an event that comes after the end (a user thread still logging).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from tether.codeserver.worker.events import RunEventEmitter, StreamClosedError
from tether.codeserver.worker.publisher import JetStreamPublisher
from tether.shared.nats import subjects
from tether.shared.wire.base import decode
from tether.shared.wire.runs import EventType, RunEvent


class Recorder:
    """What a JetStreamPublisher is asked to publish (the emitter only calls publish)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        self.messages.append((subject, body, headers))

    def events(self) -> list[RunEvent]:
        return [decode(body, RunEvent) for _, body, _ in self.messages]


def _emitter(recorder: Recorder) -> RunEventEmitter:
    return RunEventEmitter("r1", cast("JetStreamPublisher", recorder))


@pytest.mark.parametrize(
    "terminal", [EventType.RUN_SUCCESS, EventType.RUN_FAILURE, EventType.RUN_CANCELED]
)
def test_the_terminal_event_carries_the_last_seq(terminal: EventType) -> None:
    recorder = Recorder()
    emitter = _emitter(recorder)
    emitter.emit(EventType.RUN_START)
    emitter.log_sink("INFO", "hi", "a")
    end = emitter.emit(terminal)
    assert end.seq == end.last_seq == 3 == emitter.last_seq
    events = recorder.events()
    assert [e.last_seq for e in events] == [None, None, 3]
    assert all(subject == subjects.events("r1") for subject, _, _ in recorder.messages)


def test_nothing_is_published_after_the_terminal_event(caplog: Any) -> None:
    recorder = Recorder()
    emitter = _emitter(recorder)
    emitter.emit(EventType.RUN_SUCCESS)
    with pytest.raises(StreamClosedError, match="after the run's terminal event"):
        emitter.emit(EventType.ENGINE_ERROR, message="late")
    with caplog.at_level(logging.WARNING):
        emitter.log_sink("INFO", "a user thread, still logging", "a")
    assert "dropped a log message of step a" in caplog.text
    assert [e.seq for e in recorder.events()] == [1]
    assert emitter.last_seq == 1


def test_a_failed_publish_of_the_terminal_event_leaves_the_stream_open() -> None:
    class Failing(Recorder):
        def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
            raise RuntimeError("NATS is gone")

    emitter = RunEventEmitter("r1", cast("JetStreamPublisher", Failing()))
    with pytest.raises(RuntimeError):
        emitter.emit(EventType.RUN_SUCCESS)
    # Not counted, not closed: the worker's failure path may still end the run.
    assert emitter.last_seq == 0
    with pytest.raises(RuntimeError, match="NATS is gone"):
        emitter.emit(EventType.RUN_FAILURE)

"""Dead letters: the messages Tether cannot handle, kept on the dead-letter stream.

A dead letter is the message's body (and, for a consumed message, its headers) published
to ``tether.dlq.<source stream>`` with the reason in ``Tether-Reason`` and, when it was
consumed, the subject it came from in ``Tether-Subject``. The operator reads them there;
nothing consumes them automatically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from tether.shared.nats import subjects
from tether.shared.nats.headers import MSG_ID_HEADER, REASON_HEADER, SOURCE_SUBJECT_HEADER
from tether.shared.nats.subjects import Stream

__all__ = ["MAX_REASON_CHARS", "Publish", "dead_letter", "reason_value"]

#: Longest reason kept in the ``Tether-Reason`` header.
MAX_REASON_CHARS = 1000

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[object]]
"""Publishes ``(subject, body, headers)`` to JetStream (with the caller's retries)."""


def reason_value(reason: str) -> str:
    """``reason`` as a header value: one line (NATS header values cannot hold line
    breaks) of at most :data:`MAX_REASON_CHARS` characters."""
    return " ".join(reason.split())[:MAX_REASON_CHARS]


async def dead_letter(
    publish: Publish,
    source: Stream,
    body: bytes,
    reason: str,
    *,
    headers: Mapping[str, str] | None = None,
    source_subject: str | None = None,
    msg_id: str | None = None,
) -> None:
    """Publish ``body`` as a dead letter of stream ``source``.

    Args:
        publish: how to publish (the caller's timeout and retries).
        source: the stream the message belongs to (its dead letters' subject).
        body: the message body, unchanged.
        reason: why it is dead-lettered.
        headers: the message's own headers, kept (a consumed message's).
        source_subject: the subject it was consumed from.
        msg_id: the dead letter's ``Nats-Msg-Id``, so that one message gets one dead
            letter however often this is retried; None keeps the message's own id.
    """
    out = dict(headers or {})
    out[REASON_HEADER] = reason_value(reason)
    if source_subject is not None:
        out[SOURCE_SUBJECT_HEADER] = source_subject
    if msg_id is not None:
        out[MSG_ID_HEADER] = msg_id
    await publish(subjects.dead_letter(source), body, out)

"""Lost run events: the eventrelay tells the control plane which seqs it gave up on.

A run event the relay cannot upload (malformed, or refused by the control plane) is
dead-lettered (``tether.dlq.TETHER_EVENTS``), so that seq will never be stored and the
run's record would wait for it for ever. A durable consumer of those dead letters
(``eventrelay-lost-events``) reads each one's run id and seq and reports them with
``reportLostEvents`` (:class:`~tether.shared.wire.runs.LostRunEvents`); the run page then
says which events are lost and why. Durable, so a relay killed between dead-lettering and
reporting still reports (at least once: reports are idempotent on ``(run_id, seq)``).

Only what can be read is reported: the run id and seq from the body (or the worker's
``Nats-Msg-Id``, ``<run id>:<seq>``), and only for the run whose subject the message came
from (what NATS permissions vouch for). The dead letters stay in the stream for operators;
a report the control plane refuses is logged, never dead-lettered again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from tether.shared.agent_client import AgentClient, UploadOutcome
from tether.shared.nats import subjects
from tether.shared.nats.headers import MSG_ID_HEADER, REASON_HEADER, SOURCE_SUBJECT_HEADER
from tether.shared.nats.relay import RelaySpec
from tether.shared.nats.subjects import Stream
from tether.shared.wire.errors import AgentApiError, ContractError
from tether.shared.wire.runs import MAX_LOST_SEQS, LostRunEvents

log = logging.getLogger(__name__)

__all__ = ["LOST_EVENTS_DURABLE", "LostSeq", "LostEventReporter", "read_lost_seq"]

#: The durable consumer of the run events' dead letters (shared by every replica).
LOST_EVENTS_DURABLE = "eventrelay-lost-events"
#: Largest seq the control plane stores (a BIGINT).
MAX_SEQ = 2**63 - 1
#: Most reports per reportLostEvents call (well under the control plane's item limit).
REPORTS_PER_CALL = 100


@dataclass(frozen=True)
class LostSeq:
    """One dead-lettered run event: its run, its seq, and why it was dead-lettered."""

    run_id: str
    seq: int
    reason: str


def _seq(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SEQ:
        return value
    return None


def _from_body(data: bytes) -> tuple[str | None, int | None]:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # not JSON (bad UTF-8, huge ints), or nested too deep
        return None, None
    if not isinstance(body, dict):
        return None, None
    run_id = body.get("run_id")
    return (run_id if isinstance(run_id, str) and run_id else None), _seq(body.get("seq"))


def _from_msg_id(msg_id: str | None) -> tuple[str | None, int | None]:
    run_id, sep, seq = (msg_id or "").rpartition(":")
    if not sep or not run_id or not seq.isdigit():
        return None, None
    return run_id, _seq(int(seq))


def read_lost_seq(msg: Msg) -> LostSeq | None:
    """The run and seq a dead letter of a run event was, if they can be read (None: not a
    run event anyone can place, so nothing to report)."""
    headers = msg.headers or {}
    run_id, seq = _from_body(msg.data)
    if run_id is None or seq is None:
        header_run, header_seq = _from_msg_id(headers.get(MSG_ID_HEADER))
        run_id, seq = run_id or header_run, seq or header_seq
        if header_run is not None and run_id != header_run:
            return None
    if run_id is None or seq is None:
        return None
    # The body names its run, but only the subject is vouched for (a run worker may
    # publish only to its own run's subject): report no other run's seqs.
    try:
        own_subject = subjects.events(run_id)
    except ContractError:
        return None
    if headers.get(SOURCE_SUBJECT_HEADER) != own_subject:
        return None
    reason = headers.get(REASON_HEADER) or "dead-lettered by the eventrelay"
    return LostSeq(run_id=run_id, seq=seq, reason=reason)


def _reports(lost: Sequence[LostSeq]) -> list[LostRunEvents]:
    """One report per (run, reason), seqs ascending and within the report's bound."""
    grouped: dict[tuple[str, str], set[int]] = {}
    for item in lost:
        grouped.setdefault((item.run_id, item.reason), set()).add(item.seq)
    out = []
    for (run_id, reason), seqs in sorted(grouped.items()):
        ordered = sorted(seqs)
        for i in range(0, len(ordered), MAX_LOST_SEQS):
            out.append(
                LostRunEvents(run_id=run_id, seqs=ordered[i : i + MAX_LOST_SEQS], reason=reason)
            )
    return out


class LostEventReporter:
    """Reports the seqs of dead-lettered run events to the control plane.

    Args:
        client: the agent's control-plane client.
    """

    def __init__(self, client: AgentClient) -> None:
        self._client = client

    def spec(self) -> RelaySpec[LostSeq | None]:
        """The relay of the run events' dead letters to ``reportLostEvents``."""
        return RelaySpec(
            name="eventrelay.report_lost_events",
            stream=Stream.DEAD_LETTER,
            durable=LOST_EVENTS_DURABLE,
            filter_subject=subjects.dead_letter(Stream.EVENTS),
            decode=read_lost_seq,
            upload=self.report,
        )

    async def report(self, items: Sequence[LostSeq | None]) -> UploadOutcome:
        """Report the readable ones (transport failures raise: the relay retries them)."""
        reports = _reports([item for item in items if item is not None])
        for i in range(0, len(reports), REPORTS_PER_CALL):
            await self._report(reports[i : i + REPORTS_PER_CALL])
        # Nothing is handed back as refused: a dead letter is never dead-lettered again.
        return UploadOutcome(stored=len(items), duplicates=0)

    async def _report(self, reports: list[LostRunEvents]) -> None:
        try:
            outcome = await self._client.report_lost_events(reports)
        except AgentApiError as err:
            if not err.is_bad_input or len(reports) == 1:
                if err.is_bad_input:
                    log.error("lost-event report of run %s refused: %s", reports[0].run_id, err)
                    return
                raise
            # Refused as a whole: send them one by one, so only the bad one is dropped.
            for report in reports:
                await self._report([report])
            return
        for refused in outcome.refused:
            report = reports[refused.index]
            log.error(
                "lost-event report of run %s (seqs %s) refused: %s",
                report.run_id,
                report.seqs[:10],
                refused.reason,
            )

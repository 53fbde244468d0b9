"""NATS header names of the agent's messages, and the log-chunk codec that carries its key
in headers (large outputs then cost no base64 or JSON escaping on the hot path).

Every header name a Tether service reads or writes is spelled here.
"""

from __future__ import annotations

import time

from pydantic import ValidationError
from tether.shared.wire.errors import ContractError
from tether.shared.wire.logs import LogChunk, LogStream

#: JetStream's de-duplication id: a message whose id the stream saw within its duplicate
#: window is dropped (acknowledged as a duplicate), so a retried publish lands once.
MSG_ID_HEADER = "Nats-Msg-Id"
#: Why a message was dead-lettered (one line, human readable).
REASON_HEADER = "Tether-Reason"
#: The subject the dead-lettered message was consumed from.
SOURCE_SUBJECT_HEADER = "Tether-Subject"

# Log chunks travel as raw bytes with their key in headers, so large outputs cost no
# base64 or JSON escaping on the hot path.
LOG_TYPE_HEADER = "Tether-Type"


LOG_RUN_HEADER = "Tether-Run-Id"


LOG_STEP_HEADER = "Tether-Step"


LOG_STREAM_HEADER = "Tether-Stream"


LOG_OFFSET_HEADER = "Tether-Offset"


LOG_TIMESTAMP_HEADER = "Tether-Timestamp"


LOG_CHUNK_TYPE = "tether.v1.log_chunk"


def encode_log_chunk(chunk: LogChunk) -> tuple[dict[str, str], bytes]:
    """Return the NATS headers and body carrying ``chunk``."""
    headers = {
        LOG_TYPE_HEADER: LOG_CHUNK_TYPE,
        LOG_RUN_HEADER: chunk.run_id,
        LOG_STEP_HEADER: chunk.step_key,
        LOG_STREAM_HEADER: str(chunk.stream),
        LOG_OFFSET_HEADER: str(chunk.offset),
        LOG_TIMESTAMP_HEADER: repr(chunk.timestamp),
    }
    return headers, chunk.data


def decode_log_chunk(headers: dict[str, str] | None, body: bytes) -> LogChunk:
    """Rebuild a LogChunk from NATS headers and body; raise ContractError if malformed."""
    headers = headers or {}
    if headers.get(LOG_TYPE_HEADER) != LOG_CHUNK_TYPE:
        raise ContractError(f"not a {LOG_CHUNK_TYPE}: type header {headers.get(LOG_TYPE_HEADER)!r}")
    try:
        return LogChunk(
            run_id=headers[LOG_RUN_HEADER],
            step_key=headers[LOG_STEP_HEADER],
            stream=LogStream(headers[LOG_STREAM_HEADER]),
            offset=int(headers[LOG_OFFSET_HEADER]),
            timestamp=float(headers.get(LOG_TIMESTAMP_HEADER) or time.time()),
            data=body,
        )
    except (KeyError, ValueError, ValidationError) as err:
        raise ContractError(f"malformed log chunk headers {headers!r}: {err}") from err

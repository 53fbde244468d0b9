"""Service logging: JSON lines carry the current trace and span ids."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from tether.shared.runtime.service import JsonLogFormatter, setup_logging


def test_json_line_has_trace_ids_inside_a_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    formatter = JsonLogFormatter()
    record = logging.LogRecord("tether.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    with tracer.start_as_current_span("work") as span:
        line = json.loads(formatter.format(record))
        ctx = span.get_span_context()
    assert line["message"] == "hello you"
    assert line["level"] == "INFO" and line["logger"] == "tether.x"
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    # Outside a span there is nothing to link to.
    assert "trace_id" not in json.loads(formatter.format(record))


def test_json_line_carries_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonLogFormatter().format(record))
    assert "ValueError: boom" in line["exception"]


@pytest.mark.integration
def test_log_format_from_environment_in_a_fresh_process() -> None:
    code = (
        "import logging; from tether.shared.runtime.service import setup_logging; "
        "setup_logging(); logging.getLogger('svc').warning('up')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"TETHER_LOG_FORMAT": "json", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    line = json.loads(out.stderr.strip())
    assert line["message"] == "up" and line["logger"] == "svc"


def test_unknown_log_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="TETHER_LOG_FORMAT must be 'text' or 'json'"):
        setup_logging(fmt="xml")

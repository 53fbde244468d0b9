"""Prometheus metrics of an agent service, served as ``GET /metrics`` on its health port.

Every metric lives in prometheus-client's default registry (one service per process, as
deployed); the names start with ``tether_`` and the service, so one scrape config covers
them all and an HPA or an alert can act on a queue's depth, a relay's lag or a stream's
fullness. The instruments of the shared plumbing are defined here; a service defines its
own in its own module.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "RELAY_BATCH_SIZE",
    "RELAY_DEAD_LETTERED",
    "RELAY_UPLOADED",
    "RELAY_UPLOAD_FAILURES",
    "RELAY_UPLOAD_SECONDS",
    "STREAM_BYTES",
    "STREAM_FULLNESS",
    "STREAM_LIMIT_BYTES",
    "STREAM_MESSAGES",
    "STREAM_OLDEST_AGE",
    "render",
]

#: Seconds buckets for calls to the control plane or an object store (ms to a minute).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Messages per batch (1 to the relay's default maximum of 500).
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

RELAY_BATCH_SIZE = Histogram(
    "tether_relay_batch_messages",
    "Messages per upload of a relay (eventrelay, logship).",
    ["relay"],
    buckets=BATCH_BUCKETS,
)
RELAY_UPLOAD_SECONDS = Histogram(
    "tether_relay_upload_seconds",
    "Duration of one upload attempt of a relay batch.",
    ["relay"],
    buckets=LATENCY_BUCKETS,
)
RELAY_UPLOADED = Counter(
    "tether_relay_uploaded_messages", "Messages a relay uploaded and acked.", ["relay"]
)
RELAY_UPLOAD_FAILURES = Counter(
    "tether_relay_upload_failures",
    "Upload attempts that failed and were retried (destination down or refusing).",
    ["relay"],
)
RELAY_DEAD_LETTERED = Counter(
    "tether_relay_dead_lettered_messages",
    "Messages a relay moved to the dead-letter stream (malformed or refused).",
    ["relay"],
)

STREAM_BYTES = Gauge("tether_stream_bytes", "Bytes stored in a JetStream stream.", ["stream"])
STREAM_LIMIT_BYTES = Gauge(
    "tether_stream_limit_bytes",
    "The stream's max_bytes (publishers are refused at it).",
    ["stream"],
)
STREAM_MESSAGES = Gauge("tether_stream_messages", "Messages stored in a stream.", ["stream"])
STREAM_FULLNESS = Gauge(
    "tether_stream_fullness_ratio",
    "Stored bytes over max_bytes (0-1); at 1 publishes are refused.",
    ["stream"],
)
STREAM_OLDEST_AGE = Gauge(
    "tether_stream_oldest_message_age_seconds",
    "Age of the oldest message still stored (work-queue streams: the oldest not acked).",
    ["stream"],
)


def render() -> bytes:
    """The text exposition of every metric of this process."""
    return generate_latest(REGISTRY)

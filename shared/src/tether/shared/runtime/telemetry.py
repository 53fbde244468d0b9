"""OpenTelemetry bootstrap and W3C trace-context propagation through NATS headers.

Export goes to OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific
variable) is set, and nowhere otherwise; spans are still created so the traceparent
flows through work items, NATS headers and the run worker's environment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()

#: The W3C trace-context header (OpenTelemetry's key), on NATS messages and HTTP requests.
TRACEPARENT_HEADER = "traceparent"
_configured = False

TRACEPARENT_ENV = "TRACEPARENT"


def configure_tracing(service_name: str) -> None:
    """Install a tracer provider for this process (idempotent).

    Args:
        service_name: the ``service.name`` resource attribute, e.g. ``tether-poller``.
    """
    global _configured
    if _configured:
        return
    _configured = True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=200)
        )
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    """Flush and stop the tracer provider, so short-lived processes export their spans."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def tracer(name: str) -> trace.Tracer:
    """Return a tracer for instrumentation scope ``name``."""
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """Return the W3C traceparent of the current span, or None outside a span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT_HEADER)


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current trace context to ``headers`` (NATS or HTTP) and return them."""
    _PROPAGATOR.inject(headers)
    return headers


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    """Return an OpenTelemetry context whose parent is ``traceparent`` (if any)."""
    if not traceparent:
        return otel_context.Context()
    return _PROPAGATOR.extract({TRACEPARENT_HEADER: traceparent})


def context_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context:
    """Return the trace context carried in NATS/HTTP ``headers``."""
    return _PROPAGATOR.extract(dict(headers or {}))


@contextmanager
def batch_span(
    name: str, traceparents: Iterable[str | None], scope: str = "tether", **attributes: object
) -> Iterator[trace.Span]:
    """Start one span for work done at once for several traces (a relay's batch upload).

    With one cause it is :func:`span_from`. With several it starts a trace of its own,
    linked to each cause (OpenTelemetry's way for batch processing), and, when it ends,
    records in each cause's trace a span of the same name and times linked back to it,
    so every cause's trace still shows the hop.
    """
    causes = list(dict.fromkeys(tp for tp in traceparents if tp))
    if len(causes) <= 1:
        with span_from(name, causes[0] if causes else None, scope, **attributes) as span:
            yield span
        return
    attrs = {k: str(v) for k, v in attributes.items()}
    contexts = [
        trace.get_current_span(context_from_traceparent(tp)).get_span_context() for tp in causes
    ]
    links = [trace.Link(c) for c in contexts if c.is_valid]
    started = time.time_ns()
    t = tracer(scope)
    with t.start_as_current_span(
        name,
        context=otel_context.Context(),
        links=links,
        attributes={**attrs, "traces": str(len(causes))},
    ) as span:
        try:
            yield span
        finally:
            ended = time.time_ns()
            batch = span.get_span_context()
            for tp in causes:
                hop = t.start_span(
                    name,
                    context=context_from_traceparent(tp),
                    links=[trace.Link(batch)] if batch.is_valid else None,
                    attributes={**attrs, "batched": "true"},
                    start_time=started,
                )
                hop.end(end_time=ended)


@contextmanager
def span_from(
    name: str, traceparent: str | None, scope: str = "tether", **attributes: object
) -> Iterator[trace.Span]:
    """Start a span named ``name`` as a child of ``traceparent``.

    Args:
        name: span name.
        traceparent: W3C traceparent of the cause, or None to start a new trace.
        scope: instrumentation scope.
        **attributes: span attributes.
    """
    ctx = context_from_traceparent(traceparent)
    with tracer(scope).start_as_current_span(
        name, context=ctx, attributes={k: str(v) for k, v in attributes.items()}
    ) as span:
        yield span

"""OpenTelemetry bootstrap and W3C trace-context propagation through NATS headers.

Export goes to OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific
variable) is set, and nowhere otherwise; spans are still created so the traceparent
flows through work items, NATS headers and the run worker's environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
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

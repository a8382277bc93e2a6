"""One OpenTelemetry server span per RPC, parented by the caller's W3C traceparent.

With no exporter configured (`telemetry.tracing_enabled()` false) no span is made unless the
caller sent a traceparent: a non-recording span then carries its trace id into the log line.
A call with neither costs nothing here.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.runtime import telemetry
from services.runtime.interceptors.base import Metadata, metadata_value
from services.runtime.methods import MethodInfo

_tracer = trace.get_tracer("devmesh.rpc")

Span = tuple[trace.Span, object]  # the span and the token that made it current


def _parent(metadata: Metadata) -> Any:
    """The caller's trace context (W3C traceparent), or None when it sent none."""
    if metadata_value(metadata, "traceparent") is None:
        return None
    return propagate.extract({k: v for k, v in metadata if isinstance(v, str)})


def start(info: MethodInfo, metadata: Metadata) -> Span | None:
    """Start the call's span (parented by the call's `metadata`) and make it current; None
    when there is nothing to trace."""
    parent = _parent(metadata)
    if parent is None and not telemetry.tracing_enabled():
        return None
    span = _tracer.start_span(
        f"{info.service}/{info.method}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": info.service, "rpc.method": info.method},
        # No record_exception: exception text may quote request data; the log has the traceback.
    )
    return span, otel_context.attach(trace.set_span_in_context(span))


def trace_id(span: Span | None) -> str | None:
    if span is None:
        return None
    span_context = span[0].get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def finish(span: Span | None, code: str) -> None:
    if span is None:
        return
    current, token = span
    current.set_attribute("rpc.grpc.status_code", code)
    if code != "OK":
        current.set_status(Status(StatusCode.ERROR, code))
    current.end()
    otel_context.detach(token)  # type: ignore[arg-type]

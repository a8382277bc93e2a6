"""Outermost interceptor: one OpenTelemetry server span per RPC, parented by W3C traceparent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.runtime.interceptors.base import CallInterceptor, StreamBehavior, UnaryBehavior, status_name
from services.runtime.methods import MethodInfo

_tracer = trace.get_tracer("devmesh.rpc")


def _parent(context: aio.ServicerContext) -> Any:
    """The caller's trace context (W3C traceparent), or None when it sent none."""
    metadata = context.invocation_metadata() or ()
    if not any(key == "traceparent" for key, _ in metadata):
        return None
    return propagate.extract({k: v for k, v in metadata if isinstance(v, str)})


def _finish(span: trace.Span, context: aio.ServicerContext) -> None:
    code = status_name(context)
    span.set_attribute("rpc.grpc.status_code", code)
    if code != "OK":
        span.set_status(Status(StatusCode.ERROR, code))


class TracingInterceptor(CallInterceptor):
    def _span(self, info: MethodInfo, context: aio.ServicerContext) -> Any:
        return _tracer.start_as_current_span(
            f"{info.service}/{info.method}",
            context=_parent(context),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": info.service, "rpc.method": info.method},
            record_exception=False,  # exception text may quote request data; the log has the traceback
            set_status_on_exception=False,
        )

    async def around_unary(
        self, info: MethodInfo, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        with self._span(info, context) as span:
            try:
                return await behavior(request, context)
            finally:
                _finish(span, context)

    async def around_stream(
        self, info: MethodInfo, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        with self._span(info, context) as span:
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                _finish(span, context)

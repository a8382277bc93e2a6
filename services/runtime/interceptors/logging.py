"""One `rpc.completed` JSON line per call: method, code, duration, request id, trace id, principal.

Never logs payloads or metadata values other than the request id: requests may carry
documents, keys and tokens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from opentelemetry import trace

from services.runtime import logging as runtime_logging
from services.runtime import request_context
from services.runtime.interceptors.base import (
    CallInterceptor,
    StreamBehavior,
    UnaryBehavior,
    metadata_value,
    status_name,
)
from services.runtime.methods import MethodInfo

_MAX_REQUEST_ID = 128


def _request_id(context: aio.ServicerContext) -> str:
    incoming = metadata_value(context, "x-request-id")
    if incoming and len(incoming) <= _MAX_REQUEST_ID and incoming.isprintable():
        return incoming
    return uuid.uuid4().hex


class LoggingInterceptor(CallInterceptor):
    def _completed(
        self, info: MethodInfo, context: aio.ServicerContext, start: float, cancelled: bool
    ) -> None:
        span_context = trace.get_current_span().get_span_context()
        runtime_logging.line(
            "devmesh.rpc",
            "rpc.completed",
            {
                "method": info.full_method,
                "code": "CANCELLED" if cancelled else status_name(context),
                "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                "trace_id": format(span_context.trace_id, "032x") if span_context.is_valid else None,
                "principal": request_context.principal.get(),
                "reason": request_context.error_reason.get() or None,
                "peer": context.peer(),
            },
        )

    async def around_unary(
        self, info: MethodInfo, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        start = time.perf_counter()
        request_context.request_id.set(_request_id(context))
        cancelled = False
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._completed(info, context, start, cancelled)

    async def around_stream(
        self, info: MethodInfo, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        start = time.perf_counter()
        request_context.request_id.set(_request_id(context))
        cancelled = False
        try:
            async for response in behavior(request, context):
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            cancelled = True
            raise
        finally:
            self._completed(info, context, start, cancelled)

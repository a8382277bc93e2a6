"""Prometheus latency histogram by method and code, and an in-flight gauge."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from services.runtime.interceptors.base import CallInterceptor, StreamBehavior, UnaryBehavior, status_name
from services.runtime.methods import MethodInfo
from services.runtime.telemetry import RPC_DURATION, RPC_IN_FLIGHT

_UNARY_IN_FLIGHT = RPC_IN_FLIGHT.labels("unary")
_STREAM_IN_FLIGHT = RPC_IN_FLIGHT.labels("stream")


class MetricsInterceptor(CallInterceptor):
    async def around_unary(
        self, info: MethodInfo, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        start = time.perf_counter()
        _UNARY_IN_FLIGHT.inc()
        try:
            return await behavior(request, context)
        finally:
            _UNARY_IN_FLIGHT.dec()
            RPC_DURATION.labels(info.service, info.method, status_name(context)).observe(
                time.perf_counter() - start
            )

    async def around_stream(
        self, info: MethodInfo, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        start = time.perf_counter()
        _STREAM_IN_FLIGHT.inc()
        try:
            async for response in behavior(request, context):
                yield response
        finally:
            _STREAM_IN_FLIGHT.dec()
            RPC_DURATION.labels(info.service, info.method, status_name(context)).observe(
                time.perf_counter() - start
            )

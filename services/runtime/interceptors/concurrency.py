"""A bound on RPCs served at once, separate for unary calls and long-lived streams.

Over the bound a call fails fast with RESOURCE_EXHAUSTED and RetryInfo rather than queueing
without limit: a client can back off, a queue only hides overload until memory runs out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from services.runtime.errors import QuotaViolation, ResourceExhausted
from services.runtime.interceptors.base import CallInterceptor, StreamBehavior, UnaryBehavior
from services.runtime.interceptors.errors import abort_with
from services.runtime.methods import MethodInfo
from services.runtime.telemetry import RPC_REJECTED


class ConcurrencyLimitInterceptor(CallInterceptor):
    def __init__(self, max_unary: int, max_streams: int) -> None:
        super().__init__()
        self.max_unary = max_unary
        self.max_streams = max_streams
        self.unary_in_flight = 0
        self.streams_open = 0

    @staticmethod
    def _refusal(kind: str, limit: int) -> ResourceExhausted:
        return ResourceExhausted(
            f"the server is serving its maximum of {limit} concurrent {kind}; retry shortly",
            retry_after=0.1 if kind == "calls" else 1.0,
            quota_violations=[QuotaViolation(subject="server", description=f"{limit} concurrent {kind}")],
            reason="SERVER_OVERLOADED",
        )

    async def around_unary(
        self, info: MethodInfo, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        if self.unary_in_flight >= self.max_unary:
            RPC_REJECTED.labels("unary").inc()
            await abort_with(context, self._refusal("calls", self.max_unary), info)
        self.unary_in_flight += 1
        try:
            return await behavior(request, context)
        finally:
            self.unary_in_flight -= 1

    async def around_stream(
        self, info: MethodInfo, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        if self.streams_open >= self.max_streams:
            RPC_REJECTED.labels("stream").inc()
            await abort_with(context, self._refusal("streams", self.max_streams), info)
        self.streams_open += 1
        try:
            async for response in behavior(request, context):
                yield response
        finally:
            self.streams_open -= 1

"""A bound on RPCs served at once, separate for unary calls and long-lived streams.

Over the bound a call fails fast with RESOURCE_EXHAUSTED and RetryInfo rather than queueing
without limit: a client can back off, a queue only hides overload until memory runs out.
"""

from __future__ import annotations

from grpc import aio

from services.runtime.errors import QuotaViolation, ResourceExhausted
from services.runtime.interceptors.errors import end_call
from services.runtime.methods import MethodInfo
from services.runtime.telemetry import RPC_REJECTED


class ConcurrencyLimit:
    def __init__(self, max_unary: int, max_streams: int) -> None:
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

    def enter_unary(self, info: MethodInfo, context: aio.ServicerContext) -> None:
        """Count the call in, or refuse it; every admitted call must `exit_unary`."""
        if self.unary_in_flight >= self.max_unary:
            RPC_REJECTED.labels("unary").inc()
            end_call(context, self._refusal("calls", self.max_unary), info)
        self.unary_in_flight += 1

    def exit_unary(self) -> None:
        self.unary_in_flight -= 1

    def enter_stream(self, info: MethodInfo, context: aio.ServicerContext) -> None:
        if self.streams_open >= self.max_streams:
            RPC_REJECTED.labels("stream").inc()
            end_call(context, self._refusal("streams", self.max_streams), info)
        self.streams_open += 1

    def exit_stream(self) -> None:
        self.streams_open -= 1

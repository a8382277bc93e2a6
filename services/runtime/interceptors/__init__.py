"""The server interceptor chain, outer to inner.

    tracing -> metrics -> logging -> [authentication -> authorization] -> concurrency limit
            -> [rate limit] -> errors

Authentication, authorization and rate limiting arrive with the identity work; they slot in
at the marked places in `build_chain` and refuse calls with `abort_with`, like the
concurrency limit does.
"""

from __future__ import annotations

from collections.abc import Sequence

from grpc import aio

from services.runtime.interceptors.concurrency import ConcurrencyLimitInterceptor
from services.runtime.interceptors.errors import ErrorInterceptor, ErrorTranslator, abort_with
from services.runtime.interceptors.logging import LoggingInterceptor
from services.runtime.interceptors.metrics import MetricsInterceptor
from services.runtime.interceptors.tracing import TracingInterceptor

__all__ = ["abort_with", "build_chain"]


def build_chain(
    *, max_unary: int, max_streams: int, translators: Sequence[ErrorTranslator] = ()
) -> list[aio.ServerInterceptor]:
    return [
        TracingInterceptor(),
        MetricsInterceptor(),
        LoggingInterceptor(),
        # authentication, authorization: identity issue
        ConcurrencyLimitInterceptor(max_unary, max_streams),
        # rate limit: identity issue
        ErrorInterceptor(translators),
    ]

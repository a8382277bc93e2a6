"""The server interceptor chain, outer to inner.

    tracing -> metrics -> logging -> audit -> access (authentication, authorization,
            rate limit) -> concurrency limit -> errors

Interceptors refuse calls with `abort_with`, so every refusal carries the same
google.rpc.Status shape. Audit sits outside access so that it records refusals; access is
absent when the process runs with DEVMESH_AUTH=off.
"""

from __future__ import annotations

from collections.abc import Sequence

from grpc import aio

from services.runtime.interceptors.access import AccessInterceptor
from services.runtime.interceptors.audit import AuditInterceptor
from services.runtime.interceptors.concurrency import ConcurrencyLimitInterceptor
from services.runtime.interceptors.errors import ErrorInterceptor, ErrorTranslator, abort_with
from services.runtime.interceptors.logging import LoggingInterceptor
from services.runtime.interceptors.metrics import MetricsInterceptor
from services.runtime.interceptors.tracing import TracingInterceptor

__all__ = ["AccessInterceptor", "AuditInterceptor", "abort_with", "build_chain"]


def build_chain(
    *,
    max_unary: int,
    max_streams: int,
    translators: Sequence[ErrorTranslator] = (),
    audit: AuditInterceptor | None = None,
    access: AccessInterceptor | None = None,
) -> list[aio.ServerInterceptor]:
    optional = [i for i in (audit, access) if i is not None]
    return [
        TracingInterceptor(),
        MetricsInterceptor(),
        LoggingInterceptor(),
        *optional,
        ConcurrencyLimitInterceptor(max_unary, max_streams),
        ErrorInterceptor(translators),
    ]

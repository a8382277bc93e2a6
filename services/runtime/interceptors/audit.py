"""One audit event per mutation (whatever its outcome) and per refused credential or
permission (reads included). Sits outside the access interceptor so that it sees refusals.

Reads that succeed are not audited: ResolveConfig at thousands of calls a second would drown
the trail. Public methods are never audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from services.runtime import request_context
from services.runtime.audit import AuditLog
from services.runtime.interceptors.base import (
    CallInterceptor,
    StreamBehavior,
    UnaryBehavior,
    metadata_value,
    status_name,
)
from services.runtime.logging import get_logger
from services.runtime.methods import MethodInfo, resource_of

log = get_logger(__name__)

_REFUSALS = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


class AuditInterceptor(CallInterceptor):
    def __init__(self, audit: AuditLog) -> None:
        super().__init__()
        self._audit = audit

    def wrap(self, info: MethodInfo, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return handler if info.public else super().wrap(info, handler)

    async def _record(
        self, info: MethodInfo, raw: Any, context: aio.ServicerContext, notes: dict[str, str], code: str
    ) -> None:
        if not info.mutation and code not in _REFUSALS:
            return
        try:
            await self._write(info, raw, context, notes, code)
        except Exception:  # the call's outcome stands; the log keeps the failure
            log.exception("audit.record_failed", method=info.full_method)

    async def _write(
        self, info: MethodInfo, raw: Any, context: aio.ServicerContext, notes: dict[str, str], code: str
    ) -> None:
        resource = notes.pop("resource", "") or resource_of(
            info.decode_request(raw) if isinstance(raw, bytes) else raw
        )
        peer = context.peer() or ""
        forwarded = metadata_value(context, "x-forwarded-for")
        await self._audit.record(
            actor=request_context.principal.get(),
            action=info.action,
            resource=resource,
            result=code,
            reason=request_context.error_reason.get() if code != "OK" else "",
            request_id=request_context.request_id.get(),
            peer=f"{peer} for {forwarded}" if forwarded else peer,
            method=info.full_method,
            service=info.short_service,
            details=notes,
        )

    async def around_unary(
        self, info: MethodInfo, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        notes: dict[str, str] = {}
        request_context.audit_notes.set(notes)
        cancelled = False
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            cancelled = True  # the caller went away; the change may or may not have happened
            raise
        finally:
            await self._record(
                info, request, context, notes, "CANCELLED" if cancelled else status_name(context)
            )

    async def around_stream(
        self, info: MethodInfo, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        notes: dict[str, str] = {}
        request_context.audit_notes.set(notes)
        try:
            async for response in behavior(request, context):
                yield response
        except aio.AbortError:
            await self._record(info, request, context, notes, status_name(context))
            raise
        else:
            await self._record(info, request, context, notes, status_name(context))

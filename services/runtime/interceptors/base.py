"""A server interceptor that wraps each RPC's behaviour, built once per method.

grpc.aio calls `intercept_service` on every call; rebuilding handlers there would cost
every RPC a chain of closures. Each interceptor here caches the handler it builds per
method, so after the first call the whole chain is a lookup and one partial per layer.
Client-streaming RPCs pass through untouched: devmesh has none.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from services.runtime.methods import MethodInfo, method_info

UnaryBehavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext], AsyncIterator[Any]]


class CallInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Subclasses override `around_unary` and `around_stream`; both default to pass-through."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        cached = self._handlers.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        wrapped = self.wrap(method_info(details.method), handler)
        self._handlers[details.method] = wrapped
        return wrapped

    def wrap(self, info: MethodInfo, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Build the handler that runs `around_*` around the inner behaviour of one method."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                functools.partial(self.around_unary, info, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            functools.partial(self.around_stream, info, handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def around_unary(
        self, info: MethodInfo, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        return await behavior(request, context)

    async def around_stream(
        self, info: MethodInfo, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for response in behavior(request, context):
            yield response


def metadata_value(context: aio.ServicerContext, key: str) -> str | None:
    """The first value of an invocation metadata key (keys are lowercase on the wire)."""
    for item in context.invocation_metadata() or ():
        if item[0] == key:
            return item[1] if isinstance(item[1], str) else None
    return None


def status_name(context: aio.ServicerContext) -> str:
    """The call's final status code name; OK when nothing set one."""
    code: grpc.StatusCode | None = context.code()
    return "OK" if code is None else str(code.name)

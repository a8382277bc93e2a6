"""What an answer carries besides its messages: the rate-limit headers, and for REST callers
an `ETag`.

gRPC callers get the rate-limit headers as trailing metadata: they travel with the status,
at no extra cost. REST callers through the edge (Envoy marks a transcoded call with
`x-envoy-original-path`) see only HTTP headers: theirs leave with the first message, the
response's `etag` field as an `ETag` header among them, or, when the call fails first, in
the trailers the edge turns into the error's headers. Nothing leaves before the first
message: a call that fails at once must stay a trailers-only answer, which the edge turns
into the HTTP status of the error (a `:watch` of a missing namespace is a 404, not a 200
with an error in its body).
"""

from __future__ import annotations

from typing import Any

from grpc import aio

Headers = tuple[tuple[str, str], ...]


class ResponseHeaders:
    __slots__ = ("_context", "_pending", "_rest")

    def __init__(self, context: aio.ServicerContext, *, rest: bool) -> None:
        self._context = context
        self._rest = rest  # False once REST's headers have left, too
        self._pending: Headers = ()

    def add(self, headers: Headers) -> None:
        """Headers every answer of this call carries, whatever its outcome."""
        if not headers:
            return
        if self._rest:
            self._pending += headers
        else:
            self._context.set_trailing_metadata((*(self._context.trailing_metadata() or ()), *headers))

    async def before_message(self, message: Any) -> None:
        """Send a REST caller's headers ahead of the first message."""
        if not self._rest:
            return
        self._rest = False
        headers = self._pending
        etag = getattr(message, "etag", None)
        if isinstance(etag, str) and etag:
            headers = (*headers, ("etag", etag))
        if headers:
            await self._context.send_initial_metadata(headers)

    def for_error(self) -> Headers:
        """The headers an error must carry in its trailers: REST's, when none have left yet."""
        return self._pending if self._rest else ()

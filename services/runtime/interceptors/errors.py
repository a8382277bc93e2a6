"""The innermost step of every call: decode the request, turn typed errors into google.rpc.Status.

- ServiceError -> its code, message and details (ErrorInfo first, RequestInfo last).
- A dependency failure a translator recognises (Redis down, ...) -> that error, usually
  UNAVAILABLE with RetryInfo.
- A request that does not parse -> INVALID_ARGUMENT (grpc would say UNKNOWN and leak the
  exception type).
- NotImplementedError (a generated servicer's method that nobody built) -> UNIMPLEMENTED.
- Anything else -> INTERNAL with a generic message; the traceback goes to the log only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc import aio

from services.runtime import request_context
from services.runtime.errors import (
    Internal,
    InvalidArgument,
    ServiceError,
    Unimplemented,
    bounded,
    retry_delay,
)
from services.runtime.logging import get_logger
from services.runtime.methods import MethodInfo

log = get_logger(__name__)

ErrorTranslator = Callable[[BaseException], ServiceError | None]

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class CallEnded(Exception):
    """Raised by `end_call`: the call is over, with this status. The call pipeline runs the
    call's last steps (audit, metrics, the log line), then `send`s it."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, Any], ...]) -> None:
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, trailers

    async def send(self, context: aio.ServicerContext) -> NoReturn:
        """Send the status with no message (trailers only, unless headers already left): what
        the edge turns into a JSON error body."""
        await context.abort(self.code, self.message, trailing_metadata=self.trailers)
        raise AssertionError("context.abort returned")  # it always raises AbortError


def end_call(
    context: aio.ServicerContext,
    error: ServiceError,
    info: MethodInfo,
    metadata: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """End the call with `error` as a google.rpc.Status in `grpc-status-details-bin`, plus any
    extra trailing `metadata` (rate-limit headers) and, when the error says when to retry,
    `retry-after`.

    Every step that refuses a call (limits, auth) uses this, so all refusals look alike. The
    status is sent only after the call's last steps ran, so a caller told of a refusal finds it
    in the audit trail (`context.abort` here would send it at once).
    """
    request_context.error_reason.set(error.reason)
    status = error.to_status(info.error_domain)
    rid = request_context.request_id.get()
    if rid:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RequestInfo(request_id=rid))
        status.details.append(packed)
    status = bounded(status)
    code = _GRPC_CODES[status.code]
    context.set_code(code)  # what the last steps record as the call's code
    already = tuple(context.trailing_metadata() or ())  # rate-limit trailers set earlier, say
    if error.retry_after is not None:
        # HTTP's form of RetryInfo, whole seconds: the edge hands it to REST callers as a header.
        metadata = (*metadata, ("retry-after", str(math.ceil(retry_delay(error.retry_after)))))
    raise CallEnded(
        code, status.message, (*already, *metadata, ("grpc-status-details-bin", status.SerializeToString()))
    )


class ErrorMapper:
    def __init__(self, translators: Sequence[ErrorTranslator] = ()) -> None:
        self._translators = list(translators)

    def map(self, exc: Exception, info: MethodInfo) -> ServiceError:
        if isinstance(exc, ServiceError):
            return exc
        if isinstance(exc, NotImplementedError):  # what a generated servicer's unbuilt method raises
            return Unimplemented(f"{info.method} is not implemented", reason="NOT_IMPLEMENTED")
        for translate in self._translators:
            translated = translate(exc)
            if translated is not None:
                log.warning(
                    "rpc.dependency_failed",
                    method=info.full_method,
                    error=type(exc).__name__,
                    reason=translated.reason,
                )
                return translated
        log.error("rpc.internal_error", method=info.full_method, exc_info=exc)
        rid = request_context.request_id.get()
        return Internal(
            f"internal error; quote request id {rid} when reporting it" if rid else "internal error"
        )


def decode(raw: bytes, deserializer: Callable[[bytes], Any] | None) -> Any:
    """The request message; a request that does not parse is INVALID_ARGUMENT."""
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except DecodeError as exc:
        raise InvalidArgument(f"the request could not be parsed: {exc}", reason="MALFORMED_REQUEST") from None

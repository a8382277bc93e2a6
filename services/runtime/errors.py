"""Typed errors that domain code raises, and their google.rpc.Status form.

Domain code never touches gRPC: it raises one of these, and the call pipeline's error step turns
it into a status with an ErrorInfo (reason in UPPER_SNAKE, domain `<svc>.devmesh`) plus
the detail types the code calls for (BadRequest, RetryInfo, QuotaFailure, ...). Messages
are written for the caller: they never carry secrets, tokens or stack traces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from google.protobuf import any_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.runtime.bounds import clip, clip_message


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is a request field path or a JSON pointer into a document."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition (type in UPPER_SNAKE, subject the resource concerned)."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota: what ran out and for whom."""

    subject: str
    description: str


class ServiceError(Exception):
    """Base of every error that reaches a caller as a non-OK status."""

    code: ClassVar[int] = code_pb2.UNKNOWN
    default_reason: ClassVar[str] = "UNKNOWN"
    retry_after: float | None = None  # seconds after which a retry may succeed, when known

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[Message]:
        """Detail messages besides ErrorInfo; subclasses add their own."""
        return []

    def to_status(self, domain: str) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=domain, metadata=self.metadata)
        status = status_pb2.Status(code=self.code, message=self.message)
        for detail in [info, *self.details()]:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return status


class InvalidArgument(ServiceError):
    code = code_pb2.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        field_violations: Sequence[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.field_violations = list(field_violations)

    @classmethod
    def for_field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """The common case: one field is wrong, and the message says which and why."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)], reason=reason)

    def details(self) -> list[Message]:
        if not self.field_violations:
            return []
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description, reason=v.reason
                    )
                    for v in self.field_violations
                ]
            )
        ]


class _ResourceError(ServiceError):
    def __init__(
        self,
        message: str,
        *,
        resource_type: str = "",
        resource_name: str = "",
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def details(self) -> list[Message]:
        if not self.resource_name:
            return []
        return [
            error_details_pb2.ResourceInfo(resource_type=self.resource_type, resource_name=self.resource_name)
        ]


class NotFound(_ResourceError):
    code = code_pb2.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(_ResourceError):
    code = code_pb2.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class Aborted(ServiceError):
    """A concurrency conflict: a stale etag, or a transaction that lost a race. Retry after re-reading."""

    code = code_pb2.ABORTED
    default_reason = "ABORTED"


class FailedPrecondition(ServiceError):
    code = code_pb2.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        violations: Iterable[PreconditionViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)

    def details(self) -> list[Message]:
        if not self.violations:
            return []
        return [
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in self.violations
                ]
            )
        ]


class OutOfRange(ServiceError):
    code = code_pb2.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class PermissionDenied(ServiceError):
    code = code_pb2.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(ServiceError):
    code = code_pb2.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


# The shortest delay a RetryInfo or a message advises: a client cannot act on 0.000177 s,
# and one that retries at once only adds load.
MIN_RETRY_DELAY = 0.01


def retry_delay(seconds: float) -> float:
    """The delay to advise for `seconds`: whole milliseconds, rounded up, at least MIN_RETRY_DELAY."""
    return max(MIN_RETRY_DELAY, math.ceil(seconds * 1000) / 1000)


def describe_delay(seconds: float) -> str:
    """`retry_delay(seconds)` as a person reads it: `10 ms`, `250 ms`, `1.5 s`, `3 s`."""
    delay = retry_delay(seconds)
    if delay < 1:
        return f"{round(delay * 1000)} ms"
    return f"{delay:.3f}".rstrip("0").rstrip(".") + " s"


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(round(retry_delay(seconds) * 1000))
    return error_details_pb2.RetryInfo(retry_delay=delay)


class ResourceExhausted(ServiceError):
    code = code_pb2.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        quota_violations: Sequence[QuotaViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after
        self.quota_violations = list(quota_violations)

    def details(self) -> list[Message]:
        details: list[Message] = []
        if self.retry_after is not None:
            details.append(_retry_info(self.retry_after))
        if self.quota_violations:
            details.append(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
                        for v in self.quota_violations
                    ]
                )
            )
        return details


class Unavailable(ServiceError):
    """A dependency (Redis, Vault) is down or slow. Safe to retry after `retry_after` seconds."""

    code = code_pb2.UNAVAILABLE
    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after: float = retry_after

    def details(self) -> list[Message]:
        return [_retry_info(self.retry_after)]


class DeadlineExceeded(ServiceError):
    code = code_pb2.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(ServiceError):
    code = code_pb2.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class Internal(ServiceError):
    """Raised only by the runtime for unexpected failures; the message stays generic."""

    code = code_pb2.INTERNAL
    default_reason = "INTERNAL"


# How much of the caller's input a status may quote, and how large it may get. gRPC clients
# refuse trailers over 8 KiB by default, and a status travels twice: as grpc-message
# (percent-encoded) and inside grpc-status-details-bin (base64). Strings of the details are
# clipped to the first limits that fit, then to the second; a status still too large keeps
# only the details a client acts on (ErrorInfo, RetryInfo, RequestInfo).
DETAIL_LIMITS = ((512, 20), (128, 5))  # (characters per string, entries per list or map)
MAX_STATUS_BYTES = 3000
MAX_MESSAGE_WIRE_BYTES = 1500
_ESSENTIAL_DETAILS = frozenset(
    t.DESCRIPTOR.full_name
    for t in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.RequestInfo)
)


def _wire_length(char: str) -> int:
    """Bytes `char` takes in grpc-message, which percent-encodes everything but printable ASCII."""
    return 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "surrogatepass"))


def fit_message(message: str) -> str:
    """`message`, clipped so that it stays within MAX_MESSAGE_WIRE_BYTES as grpc-message."""
    used = 0
    for index, char in enumerate(message):
        used += _wire_length(char)
        if used > MAX_MESSAGE_WIRE_BYTES - 40:  # room for the marker
            return clip(message, index)
    return message


def reason_of(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The ErrorInfo reason a failed call's trailers carry (the side that reads what
    `ServiceError` sends); "" when they carry none."""
    for key, raw in trailing_metadata or ():
        if key == "grpc-status-details-bin" and isinstance(raw, bytes):
            for packed in status_pb2.Status.FromString(raw).details:
                info = error_details_pb2.ErrorInfo()
                if packed.Unpack(info):
                    return str(info.reason)
    return ""


def _unpack(packed: any_pb2.Any) -> Message | None:
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(packed.TypeName())
    except KeyError:
        return None
    message = message_factory.GetMessageClass(descriptor)()
    return message if packed.Unpack(message) else None


def bounded(status: status_pb2.Status) -> status_pb2.Status:
    """`status` (changed in place) clipped so that it fits in a response's trailers."""
    status.message = fit_message(status.message)
    for text_limit, max_items in DETAIL_LIMITS:
        for packed in status.details:
            detail = _unpack(packed)
            if detail is not None:
                clip_message(detail, text_limit=text_limit, max_items=max_items)
                packed.Pack(detail)
        if status.ByteSize() <= MAX_STATUS_BYTES:
            return status
    kept = [p for p in status.details if p.TypeName() in _ESSENTIAL_DETAILS]
    del status.details[:]
    status.details.extend(kept)
    return status

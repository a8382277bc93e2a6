"""Typed errors that domain code raises, and their google.rpc.Status form.

Domain code never touches gRPC: it raises one of these, and the call pipeline's error step turns
it into a status with an ErrorInfo (reason in UPPER_SNAKE, domain `<svc>.devmesh`) plus
the detail types the code calls for (BadRequest, RetryInfo, QuotaFailure, ...). Messages
are written for the caller: they never carry secrets, tokens or stack traces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2


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


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
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
        self.retry_after = retry_after

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

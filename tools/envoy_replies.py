"""The edge's own replies (Envoy-made errors) as google.rpc.Status, for REST and gRPC callers.

Envoy answers some calls itself: no healthy upstream, an upstream timeout, the flood guard,
a body, path or header block over the edge's limits, a request the transcoder cannot map.
Every such reply gets the shape the services' errors have: for REST callers a JSON
google.rpc.Status with an ErrorInfo (domain `edge.devmesh`), a RetryInfo and a `Retry-After`
header when waiting helps, and a RequestInfo; for native gRPC callers, where the reply is
retryable, a `grpc-status-details-bin` header built here, whose code and message are the ones
Envoy puts in `grpc-status` and `grpc-message` (clients such as grpcio's `rpc_status.from_call`
refuse details that disagree with them).

Everything is rendered into `local_reply_config` mappers; the first mapper that matches wins.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

DOMAIN = "edge.devmesh"
RETRY_AFTER_SECONDS = 1  # upstream health is re-checked every second; the flood guard refills per second
STATUS_TYPE = "type.googleapis.com/google.rpc."
# Replies a filter built in full (the REST guard's unknown-field refusal) carry this metadata:
# the mappers pass their body through untouched.
VERBATIM_FILTER, VERBATIM_KEY = "devmesh.edge", "verbatim"


@dataclass(frozen=True)
class EdgeError:
    """One kind of reply Envoy makes itself, as callers see it."""

    reason: str  # the ErrorInfo reason
    http_status: int
    grpc_code: int  # the code REST callers see in the body, and gRPC callers in grpc-status
    match: dict[str, Any]  # an envoy.config.accesslog.v3.AccessLogFilter selecting the reply
    message: str = ""  # a fixed message; "" keeps Envoy's (%LOCAL_REPLY_BODY%)
    retryable: bool = False  # RetryInfo, Retry-After, and details for native gRPC callers


def _flags(*flags: str) -> dict[str, Any]:
    return {"response_flag_filter": {"flags": list(flags)}}


def _status(http_status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": http_status, "runtime_key": f"devmesh.local_reply.{http_status}"},
            }
        }
    }


def edge_errors(max_body_bytes: int, max_path_bytes: int, max_header_bytes: int) -> list[EdgeError]:
    """The kinds of reply Envoy makes itself, most specific first."""
    return [
        EdgeError(
            "NO_HEALTHY_UPSTREAM", 503, code_pb2.UNAVAILABLE, _flags("UH"),
            "no healthy upstream: the service is down or failing its health checks", retryable=True,
        ),
        EdgeError(
            "UPSTREAM_UNAVAILABLE", 503, code_pb2.UNAVAILABLE, _flags("UF", "URX", "UO", "UC", "UR"),
            "the service could not be reached or reset the call", retryable=True,
        ),
        EdgeError(
            "UPSTREAM_TIMEOUT", 504, code_pb2.UNAVAILABLE, _flags("UT"),
            "the service did not answer in time", retryable=True,
        ),
        EdgeError(
            # The flood guard flags RL only after its reply is made; it is the only 429 Envoy makes.
            "EDGE_RATE_LIMITED", 429, code_pb2.RESOURCE_EXHAUSTED, _status(429),
            "the edge is shedding load: too many requests", retryable=True,
        ),
        EdgeError(
            "BODY_TOO_LARGE", 413, code_pb2.RESOURCE_EXHAUSTED, _status(413),
            f"the request body is larger than {max_body_bytes} bytes",
        ),
        EdgeError(
            "PATH_TOO_LONG", 414, code_pb2.RESOURCE_EXHAUSTED, _status(414),
            f"the request path and query are longer than {max_path_bytes} bytes",
        ),
        EdgeError(
            "HEADERS_TOO_LARGE", 431, code_pb2.RESOURCE_EXHAUSTED, _status(431),
            f"the request headers are larger than {max_header_bytes} bytes",
        ),
    ]  # fmt: skip


# The gRPC code each other HTTP status of an Envoy-made reply stands for (google.rpc.Code's
# HTTP mapping): a transcoder 404 or 400 has no gRPC status of its own.
HTTP_TO_GRPC = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    409: code_pb2.ABORTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    429: code_pb2.RESOURCE_EXHAUSTED,
    499: code_pb2.CANCELLED,
    500: code_pb2.INTERNAL,
    501: code_pb2.UNIMPLEMENTED,
    502: code_pb2.UNAVAILABLE,
    503: code_pb2.UNAVAILABLE,
    504: code_pb2.DEADLINE_EXCEEDED,
}

NATIVE_GRPC = {  # a gRPC caller's own request: not a REST request the transcoder rewrote
    "and_filter": {
        "filters": [
            {"header_filter": {"header": {"name": "content-type", "string_match": {"prefix": "application/grpc"}}}},
            {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True, "invert_match": True}}},
        ]
    }
}  # fmt: skip


def status_details_bin(error: EdgeError) -> str:
    """`grpc-status-details-bin` for a native gRPC caller: a google.rpc.Status, base64."""
    status = status_pb2.Status(code=error.grpc_code, message=error.message)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN)
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_AFTER_SECONDS))
    for detail in (info, retry):
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return base64.b64encode(status.SerializeToString()).decode()


def _json_body(code: int, reason: str, message: str, retryable: bool) -> dict[str, Any]:
    details: list[dict[str, Any]] = [{"@type": STATUS_TYPE + "ErrorInfo", "reason": reason, "domain": DOMAIN}]
    if retryable:
        details.append({"@type": STATUS_TYPE + "RetryInfo", "retryDelay": f"{RETRY_AFTER_SECONDS}s"})
    details.append({"@type": STATUS_TYPE + "RequestInfo", "requestId": "%REQ(X-REQUEST-ID)%"})
    return {"code": code, "message": message or "%LOCAL_REPLY_BODY%", "details": details}


def _json_format(body: dict[str, Any]) -> dict[str, Any]:
    return {"json_format": body, "content_type": "application/json"}


def mappers(errors: list[EdgeError]) -> list[dict[str, Any]]:
    """local_reply_config mappers: verbatim replies, then native gRPC callers (details for the
    retryable kinds, a plain grpc-message for the rest), then REST callers by kind and by status."""
    plain = {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}}
    verbatim_match = {
        "metadata_filter": {
            "matcher": {
                "filter": VERBATIM_FILTER,
                "path": [{"key": VERBATIM_KEY}],
                "value": {"bool_match": True},
            },
            "match_if_key_not_found": False,
        }
    }
    result: list[dict[str, Any]] = [
        {"filter": verbatim_match, "body_format_override": {**plain, "content_type": "application/json"}}
    ]
    for error in errors:
        if error.retryable:
            details = {"header": {"key": "grpc-status-details-bin", "value": status_details_bin(error)}}
            result.append(
                {
                    "filter": {"and_filter": {"filters": [error.match, NATIVE_GRPC]}},
                    "body": {"inline_string": error.message},
                    "body_format_override": plain,
                    "headers_to_add": [{**details, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
                }
            )
    result.append({"filter": NATIVE_GRPC, "body_format_override": plain})
    for error in errors:
        mapper: dict[str, Any] = {
            "filter": error.match,
            "status_code": error.http_status,
            "body_format_override": _json_format(
                _json_body(error.grpc_code, error.reason, error.message, error.retryable)
            ),
        }
        if error.retryable:
            retry_after = {"key": "retry-after", "value": str(RETRY_AFTER_SECONDS)}
            mapper["headers_to_add"] = [
                {"header": retry_after, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            ]
        result.append(mapper)
    for http_status, grpc_code in HTTP_TO_GRPC.items():
        reason = code_pb2.Code.Name(grpc_code)
        result.append(
            {
                "filter": _status(http_status),
                "body_format_override": _json_format(_json_body(grpc_code, reason, "", False)),
            }
        )
    return result


def default_body_format() -> dict[str, Any]:
    """Any other Envoy-made reply: the gRPC code Envoy derives, Envoy's message."""
    return _json_format(_json_body("%GRPC_STATUS(NUMBER)%", "EDGE_ERROR", "", False))  # type: ignore[arg-type]

"""What the runtime copies from hostile input is bounded: errors that quote a huge name, label
key or etag stay small enough for any client's trailers, and the audit trail keeps a clipped
copy of what unauthenticated callers sent, however large."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from devmesh.config.v1 import (
    api_keys_pb2,
    api_keys_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
)
from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime import audit
from tests.helpers import detail, error_info, refused
from tests.integration.conftest import Servers

# What a grpc client accepts in trailers by default (grpc.max_metadata_size).
CLIENT_METADATA_LIMIT = 8 * 1024


def trailer_bytes(error: grpc.aio.AioRpcError) -> int:
    return sum(len(k) + len(v) for k, v in error.trailing_metadata() or ()) + len(error.details() or "")


async def test_a_huge_label_key_is_refused_with_a_status_that_fits_in_trailers(servers: Servers) -> None:
    stub = secrets_pb2_grpc.SecretsServiceStub(servers.secrets_channel)
    request = secrets_pb2.CreateSecretRequest(
        secret_id="huge-label", secret=secrets_pb2.Secret(labels={"k" * 100_000: "v"})
    )
    error = await refused(stub.CreateSecret, request, metadata=servers.admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer_bytes(error) < CLIENT_METADATA_LIMIT
    violation = detail(error, error_details_pb2.BadRequest).field_violations[0]  # type: ignore[attr-defined]
    assert "more characters]" in violation.field


async def test_ten_thousand_bad_bindings_are_refused_with_a_bounded_list_of_violations(
    servers: Servers,
) -> None:
    stub = secrets_pb2_grpc.SecretsServiceStub(servers.secrets_channel)
    bindings = [secrets_pb2.Binding(member=f"role:nobody-{i}", level=1) for i in range(10_000)]
    request = secrets_pb2.SetAccessPolicyRequest(
        policy=secrets_pb2.AccessPolicy(name="accessPolicies/many", prefix="x", bindings=bindings)
    )
    error = await refused(stub.SetAccessPolicy, request, metadata=servers.admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer_bytes(error) < CLIENT_METADATA_LIMIT
    violations = detail(error, error_details_pb2.BadRequest).field_violations  # type: ignore[attr-defined]
    assert 1 <= len(violations) <= 20


async def test_a_megabyte_etag_is_refused_with_a_bounded_status(servers: Servers) -> None:
    stub = api_keys_pb2_grpc.ApiKeyServiceStub(servers.config_channel)
    created = await stub.CreateApiKey(
        api_keys_pb2.CreateApiKeyRequest(api_key=api_keys_pb2.ApiKey(role="viewer")), metadata=servers.admin
    )
    request = api_keys_pb2.RotateApiKeyRequest(name=created.api_key.name, etag="9" * (1 << 20))
    error = await refused(stub.RotateApiKey, request, metadata=servers.admin)
    assert error.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert trailer_bytes(error) < CLIENT_METADATA_LIMIT
    assert error_info(error).reason


async def test_unauthenticated_calls_with_huge_names_leave_bounded_audit_events(servers: Servers) -> None:
    stub = config_pb2_grpc.ConfigServiceStub(servers.config_channel)
    redis = servers.config.runtime.redis
    before = await redis.xlen(audit.STREAM)
    huge = "namespaces/" + "a" * (3 << 20)
    for _ in range(10):
        error = await refused(stub.DeleteNamespace, config_pb2.DeleteNamespaceRequest(name=huge))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    entries = await redis.xrevrange(audit.STREAM, count=10)
    assert await redis.xlen(audit.STREAM) >= before + 10
    for _, fields in entries:
        assert sum(len(k) + len(v) for k, v in fields.items()) < 4096
        assert fields[b"resource"].startswith(b"namespaces/aaa")
        assert fields[b"resource"].endswith(b"more characters]")


async def test_audit_events_page_within_a_response_whatever_the_page_size(servers: Servers) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(servers.config_channel)
    # Events as large as the bounds allow, straight into the stream as an old writer left them.
    redis = servers.config.runtime.redis
    for i in range(40):
        await redis.xadd(
            audit.STREAM, {"actor": "x" * 200_000, "resource": f"namespaces/big-{i}", "time_us": 1}
        )
    page = await stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=1000), metadata=servers.admin
    )
    assert page.audit_events
    assert all(len(event.actor) < 300 for event in page.audit_events)


async def test_oversized_bearer_tokens_are_malformed_tokens_every_time(servers: Servers) -> None:
    stub = config_pb2_grpc.ConfigServiceStub(servers.config_channel)
    request = config_pb2.GetNamespaceRequest(name="namespaces/anything")
    for size in (9_000, 12_000, 15_000, 40_000):
        metadata = (("authorization", "Bearer " + "a" * size),)
        error = await refused(stub.GetNamespace, request, metadata=metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, size
        assert error_info(error).reason == "TOKEN_MALFORMED"

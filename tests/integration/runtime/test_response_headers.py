"""What an answer carries besides its messages, for REST callers (transcoded by the edge, which
marks them with `x-envoy-original-path`) and for gRPC callers."""

from __future__ import annotations

import uuid

import grpc

from devmesh.config.v1 import config_pb2, config_pb2_grpc
from tests.helpers import key_metadata, mint_key, refused
from tests.integration.conftest import Servers

REST = (("x-envoy-original-path", "/v1/namespaces/x"),)


def config(servers: Servers) -> config_pb2_grpc.ConfigServiceStub:
    return config_pb2_grpc.ConfigServiceStub(servers.config_channel)


async def _namespace(servers: Servers) -> config_pb2.Namespace:
    request = config_pb2.CreateNamespaceRequest(namespace_id=f"h{uuid.uuid4().hex[:8]}", namespace={})
    return await config(servers).CreateNamespace(request, metadata=servers.admin)


async def test_a_rest_caller_gets_the_etag_and_rate_limit_headers_with_the_resource(servers: Servers) -> None:
    namespace = await _namespace(servers)
    call = config(servers).GetNamespace(
        config_pb2.GetNamespaceRequest(name=namespace.name), metadata=(*servers.admin, *REST)
    )
    headers = dict(await call.initial_metadata())
    assert (await call).etag == namespace.etag
    assert headers["etag"] == namespace.etag
    assert int(headers["x-ratelimit-limit"]) > 0


async def test_a_grpc_caller_gets_the_rate_limit_headers_in_the_trailers(servers: Servers) -> None:
    namespace = await _namespace(servers)
    call = config(servers).GetNamespace(
        config_pb2.GetNamespaceRequest(name=namespace.name), metadata=servers.admin
    )
    await call
    assert "etag" not in dict(await call.initial_metadata())
    assert int(dict(await call.trailing_metadata())["x-ratelimit-limit"]) > 0


async def test_a_stream_that_fails_at_once_sends_no_headers_before_its_status(servers: Servers) -> None:
    request = config_pb2.WatchConfigRequest(name="namespaces/nowhere-at-all/environments/-")
    stream = config(servers).WatchConfig(request, metadata=(*servers.admin, *REST), timeout=10)
    error = await refused(stream.read)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # Trailers-only: what the edge turns into a 404. The headers rode with the status instead.
    assert not dict(await stream.initial_metadata())
    assert int(dict(error.trailing_metadata())["x-ratelimit-limit"]) > 0


async def test_a_stream_s_rest_headers_leave_with_its_first_message(servers: Servers) -> None:
    namespace = await _namespace(servers)
    request = config_pb2.WatchConfigRequest(name=f"{namespace.name}/environments/-")
    stream = config(servers).WatchConfig(request, metadata=(*servers.admin, *REST), timeout=10)
    await stream.read()
    assert int(dict(await stream.initial_metadata())["x-ratelimit-limit"]) > 0
    stream.cancel()


async def test_an_error_that_says_when_to_retry_carries_retry_after(servers: Servers) -> None:
    key = key_metadata(await mint_key(servers.config, "viewer", rate_per_second=0.5, rate_burst=1))
    request = config_pb2.GetNamespaceRequest(name="namespaces/whatever")
    await refused(config(servers).GetNamespace, request, metadata=(*key, *REST))  # NOT_FOUND: the burst
    limited = await refused(config(servers).GetNamespace, request, metadata=(*key, *REST))
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(limited.trailing_metadata())
    assert int(trailers["retry-after"]) >= 1
    assert trailers["x-ratelimit-remaining"] == "0"

"""Helpers the tests share: keys minted straight through the domain, credentials as call
metadata, refusals and the details they carry, and ways to wait without sleeping: for a
server's health to change (`health_becomes`), or for any condition (`eventually`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.config.api_keys import ApiKeys, NewKey
from services.runtime.identity.principal import Principal
from services.runtime.server import Server

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


async def mint_key(server: Server, role: str, **fields: Any) -> str:
    """An API key of `role`, created through the domain on `server`'s Redis and pepper, as
    `make run` creates its first admin key."""
    authenticator = server.runtime.authenticator
    assert authenticator is not None, "the server runs with DEVMESH_AUTH=off"
    api_keys = ApiKeys(server.runtime.redis, server.runtime.durable, lambda: authenticator.pepper)
    new = NewKey(
        display_name=fields.get("display_name", "test"),
        owner="",
        role=role,
        permissions=tuple(fields.get("permissions", ())),
        expire_us=0,
        rate_per_second=fields.get("rate_per_second", 0.0),
        rate_burst=fields.get("rate_burst", 0),
    )
    _, key = await api_keys.create(Principal("test-bootstrap", role="admin"), new)
    return key


def key_metadata(key: str) -> Metadata:
    """Call metadata that presents an API key."""
    return (("x-api-key", key),)


def bearer(token: str) -> Metadata:
    """Call metadata that presents a bearer token."""
    return (("authorization", f"Bearer {token}"),)


async def refused(call: Any, *args: Any, **kwargs: Any) -> grpc.aio.AioRpcError:
    """The error `call(*args, **kwargs)` fails with; the test fails if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(*args, **kwargs)
    return caught.value


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a failed call carries in its trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no google.rpc.Status in the trailers of {error.code()}: {error.details()}")


def detail(error: grpc.aio.AioRpcError, kind: type) -> object:
    """The first detail of type `kind` (ErrorInfo, BadRequest, RetryInfo, ...) of a failed call."""
    for packed in rich_status(error).details:
        if packed.Is(kind.DESCRIPTOR):  # type: ignore[attr-defined]
            message = kind()
            packed.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} in the status details")


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info = detail(error, error_details_pb2.ErrorInfo)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    return info


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a failed call's BadRequest names, in its order."""
    bad_request = detail(error, error_details_pb2.BadRequest)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    return [v.field for v in bad_request.field_violations]


async def eventually(condition: Callable[[], Awaitable[T]], what: str, *, within: float = 10.0) -> T:
    """Poll `condition` until it returns something true, and return that; the test fails,
    naming `what` it waited for, if `within` seconds pass first. For what a test cannot be
    told of (a server noticing a change, a timer firing): where the protocol says when a
    thing is ready (a stream's first message, a health Watch), wait for that instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = 0.01
    while not (value := await condition()):
        if loop.time() >= deadline:
            pytest.fail(f"still waiting after {within:g} s for {what}")
        await asyncio.sleep(pause)  # between two polls, not a wait for readiness
        pause = min(pause * 2, 0.1)
    return value


async def health_becomes(
    channel: aio.Channel,
    service: str,
    status: health_pb2.HealthCheckResponse.ServingStatus.ValueType,
    *,
    within: float = 15.0,
) -> None:
    """Return once the server's health service says `status` for `service`, as a health Watch
    stream tells it (every change, as it happens); the test fails after `within` seconds."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
    try:
        async with asyncio.timeout(within):
            async for response in watch:
                if response.status == status:
                    return
    except TimeoutError:
        pass
    finally:
        watch.cancel()
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    pytest.fail(f"{service} did not become {name} within {within:g} s")


def varint(n: int) -> bytes:
    """`n` in protobuf's base-128 varint encoding, for hand-built (and hand-broken) messages."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)

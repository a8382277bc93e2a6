"""Helpers the integration tests share: keys minted straight through the domain, refusals."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from services.config.api_keys import ApiKeys, NewKey
from services.runtime.identity.principal import Principal
from services.runtime.server import Server

Metadata = tuple[tuple[str, str], ...]


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
    return (("x-api-key", key),)


async def refused(call: Any, *args: Any, **kwargs: Any) -> grpc.aio.AioRpcError:
    """The error `call(*args, **kwargs)` fails with; the test fails if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(*args, **kwargs)
    return caught.value

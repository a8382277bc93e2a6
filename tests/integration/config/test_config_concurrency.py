"""Concurrent writers to one namespace: writers to different environments never fail each
other; writers to one environment are still serialised by its etag."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.protobuf import json_format

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from services.config.store import log_key
from tests.helpers import error_info
from tests.integration.config.conftest import create, env_name, put

Stub = config_pb2_grpc.ConfigServiceStub
WRITERS = 16
WRITES_EACH = 8
# Every overlay is checked against the schema with the base under it: its guard includes the base.
PORT_SCHEMA = {"properties": {"port": {"type": "integer"}}}


async def log_revisions(valkey: Any, ns: str) -> list[int]:
    client = aioredis.Redis.from_url(valkey.url)
    try:
        entries = await client.xrange(log_key(ns))
    finally:
        await client.aclose()
    return [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]


async def test_writers_to_different_environments_never_fail_each_other(
    config: Stub, ns: str, valkey: Any
) -> None:
    await create(config, ns, schema=PORT_SCHEMA)
    await put(config, ns, "default", {"port": 80})
    start = asyncio.Event()

    async def writer(index: int) -> list[int]:
        await start.wait()
        return [(await put(config, ns, f"env-{index}", {"port": n})).revision for n in range(WRITES_EACH)]

    tasks = [asyncio.create_task(writer(i)) for i in range(WRITERS)]
    start.set()
    revisions = [r for written in await asyncio.gather(*tasks) for r in written]  # raises on any failure
    assert len(set(revisions)) == len(revisions) == WRITERS * WRITES_EACH
    assert await log_revisions(valkey, ns) == sorted([1, 2, *revisions])
    for index in range(WRITERS):
        current = await config.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, f"env-{index}")))
        assert json_format.MessageToDict(current.content) == {"port": WRITES_EACH - 1}


async def test_concurrent_writers_with_one_etag_get_one_winner_and_the_rest_etag_mismatch(
    config: Stub, ns: str
) -> None:
    await create(config, ns)
    first = await put(config, ns, "default", {"writer": -1})

    async def writer(index: int) -> str:
        try:
            await put(config, ns, "default", {"writer": index}, etag=first.etag)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ABORTED
            return error_info(error).reason
        return "WON"

    outcomes = await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    assert sorted(set(outcomes)) == ["ETAG_MISMATCH", "WON"]
    assert outcomes.count("WON") == 1
    current = await config.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
    assert json_format.MessageToDict(current.content) == {"writer": outcomes.index("WON")}
    assert current.revision == first.revision + 1


async def test_a_float_keeps_every_digit_in_the_environment_and_its_revision(config: Stub, ns: str) -> None:
    await create(config, ns)
    written = await put(
        config, ns, "default", {"ratio": 0.1 + 0.2, "tiny": 5e-324, "big": 1.7976931348623157e308}
    )
    current = await config.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
    record = await config.GetRevision(
        pb.GetRevisionRequest(name=f"namespaces/{ns}/revisions/{written.revision}")
    )
    expected = {"ratio": 0.30000000000000004, "tiny": 5e-324, "big": 1.7976931348623157e308}
    assert json_format.MessageToDict(current.content) == json_format.MessageToDict(record.content) == expected
    assert record.revision == current.revision == written.revision
